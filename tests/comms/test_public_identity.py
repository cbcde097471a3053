"""What the public reads (issue 12): a public identity, carried-over component statuses, corrections
that never move the page back, and correct English."""

import json
from datetime import timedelta
from unittest import mock

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from comms import services
from comms.models import Delivery
from comms.status import public_ids
from incidents.models import TimelineEvent
from tests.comms.factories import SubscriberFactory, UpdateFactory, published_update
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

SUMMARY = "/status/api/v2/summary.json"
INTERNAL = "Primary database CPU saturated"


@pytest.fixture
def world(db):
    return {
        "checkout": ServiceFactory(name="Checkout", slug="checkout", is_public=True),
        "search": ServiceFactory(name="Search", slug="search", is_public=True),
        "db": ServiceFactory(name="Primary database", slug="db", is_public=False),
        "comms": UserFactory(username="erin", groups=["Communications"]),
    }


def component(client, name):
    return next(c for c in client.get(SUMMARY).json()["components"] if c["name"] == name)["status"]


def public_documents(client, incident):
    paths = ["/status/", "/status/feed.atom", SUMMARY, "/status/api/v2/incidents.json"]
    paths.append(f"/status/incidents/{public_ids.encode('incident', incident.pk)}/")
    return {path: client.get(path).content.decode() for path in paths}


# ---- the public identity ---------------------------------------------------------------------------


def test_an_update_without_a_title_never_publishes_the_internal_title_or_reference(client, world, settings):
    settings.COMMS_SUBSCRIBER_WEBHOOK_ALLOW_PRIVATE = True
    # Sev3: no approval needed; e-mail, webhook and Slack subscribers all hear of it.
    incident = declare(INTERNAL, severity=SeverityFactory(level=3), services=[world["checkout"], world["db"]])
    SubscriberFactory(email="ana@example.com")
    SubscriberFactory(channel="webhook", email="", url="https://hooks.example.com/status")
    SubscriberFactory(channel="slack", email="", url="https://slack.example.com/T1")
    update = UpdateFactory(incident=incident, title="", body="We are looking into slow checkouts.")
    with mock.patch("comms.webhooks.host_resolve", return_value=("93.184.216.34",)), mock.patch(
        "comms.webhooks.destination_post", return_value=(200, "", None)
    ) as post:
        services.update_publish(update=update, actor=world["comms"])
        services.deliveries_send(delivery_ids=list(Delivery.objects.values_list("pk", flat=True)))
    neutral = "Service disruption: Checkout"  # from its public services only
    for path, body in public_documents(client, incident).items():
        assert INTERNAL not in body and incident.reference not in body, path
        assert "Primary database" not in body, path
    assert neutral in client.get("/status/").content.decode()
    [message] = mail.outbox
    assert message.subject == f"[Investigating] {neutral}"
    texts = [message.subject, message.body, message.alternatives[0][0]] + [c.args[1].decode() for c in post.call_args_list]
    for text in texts:
        assert INTERNAL not in text and incident.reference not in text
    webhook = json.loads(next(c.args[1] for c in post.call_args_list if c.args[0].host == "hooks.example.com"))
    assert webhook["incident"]["name"] == neutral
    assert webhook["incident"]["id"] == public_ids.encode("incident", incident.pk)


def test_communications_set_the_public_title_and_impact_and_everything_public_uses_them(client, world):
    incident = declare(INTERNAL, services=[world["checkout"]])
    services.incident_public_identity_set(
        incident=incident, actor=world["comms"], public_title="Slow checkouts",
        public_impact="Some card payments take a minute.",
    )  # fmt: skip
    incident.refresh_from_db()
    assert incident.public_title == "Slow checkouts"
    assert TimelineEvent.objects.filter(incident=incident, kind="fields_changed").exists()
    published_update(incident, body="Looking into it.")
    docs = public_documents(client, incident)
    assert all("Slow checkouts" in body for body in docs.values())
    assert "Some card payments take a minute." in docs[f"/status/incidents/{public_ids.encode('incident', incident.pk)}/"]


def test_only_communications_set_it_and_the_reference_is_refused(world):
    incident = declare(INTERNAL, services=[world["checkout"]])
    responder = UserFactory(username="rita", groups=["Responders"])
    with pytest.raises(services.UpdatePermissionError):
        services.incident_public_identity_set(incident=incident, actor=responder, public_title="x", public_impact="")
    with pytest.raises(services.UpdateError, match="internal reference"):
        services.incident_public_identity_set(
            incident=incident, actor=world["comms"], public_title=f"Follow-up to {incident.reference}", public_impact=""
        )


def test_several_public_services_make_a_neutral_title_in_english(client, world):
    incident = declare(INTERNAL, services=[world["search"], world["checkout"], world["db"]])
    published_update(incident)
    [listed] = client.get(SUMMARY).json()["incidents"]
    assert listed["name"] == "Service disruption: Checkout and Search"


# ---- component status carries over; corrections never move the page back -----------------------------


def test_a_follow_up_that_names_no_component_leaves_it_as_it_was(client, world):
    incident = declare(INTERNAL, services=[world["checkout"]])
    earlier = timezone.now() - timedelta(minutes=20)
    published_update(incident, components=[(world["checkout"], "major_outage")], published_at=earlier)
    published_update(incident, public_status="identified", body="Found the cause.")  # names no component
    assert component(client, "Checkout") == "major_outage"


def test_publishing_a_correction_of_an_older_update_never_moves_the_page_back(client, world):
    incident = declare(INTERNAL, services=[world["checkout"]])
    t0 = timezone.now() - timedelta(hours=1)
    first = published_update(incident, components=[(world["checkout"], "major_outage")], published_at=t0)
    published_update(
        incident, public_status="monitoring", components=[(world["checkout"], "operational")],
        published_at=t0 + timedelta(minutes=30),
    )  # fmt: skip
    correction = services.update_correct(update=first, actor=world["comms"], body="We saw errors at checkout only.")
    services.update_publish(update=correction, actor=world["comms"])
    [listed] = client.get(SUMMARY).json()["incidents"]
    assert listed["status"] == "monitoring"
    assert component(client, "Checkout") == "operational"
    assert "We saw errors at checkout only." in client.get("/status/").content.decode()  # the correction shows


# ---- wording ----------------------------------------------------------------------------------------


def test_templates_speak_english_for_one_or_several_components(world):
    one = declare(INTERNAL, services=[world["checkout"]])
    two = declare(INTERNAL, services=[world["checkout"], world["search"]])
    text = "{{ services_are }} slow. Problems with {{ services }}."
    assert services.update_preview(incident=one, audience="external", public_status="investigating", body=text)[1] == (
        "Checkout is slow. Problems with Checkout."
    )
    assert services.update_preview(incident=two, audience="external", public_status="investigating", body=text)[1] == (
        "Checkout and Search are slow. Problems with Checkout and Search."
    )


def test_an_email_subject_never_repeats_the_status(world):
    incident = declare(INTERNAL, severity=SeverityFactory(level=3), services=[world["checkout"]])
    SubscriberFactory(email="ana@example.com")
    update = UpdateFactory(incident=incident, public_status="resolved", title="Resolved: {{ services }}")
    with transaction.atomic():
        services.update_publish(update=update, actor=world["comms"])
    services.deliveries_send(delivery_ids=list(Delivery.objects.values_list("pk", flat=True)))
    assert [m.subject for m in mail.outbox] == ["Resolved: Checkout"]


# ---- set in the admin and through the API -------------------------------------------------------------


def test_the_admin_form_sets_it_for_communications_only(client, world):
    incident = declare(INTERNAL, services=[world["checkout"]])
    url = f"/admin/comms/update/public-identity/{incident.pk}/"
    client.force_login(UserFactory(username="rita", groups=["Responders"]))
    assert client.get(url).status_code == 403
    client.force_login(world["comms"])
    page = client.get(url).content.decode()
    assert "Service disruption: Checkout" in page and "Neither ever reaches the public" in page
    refused = client.post(url, {"public_title": f"About {incident.reference}", "public_impact": ""})
    assert refused.status_code == 200 and "never shown publicly" in refused.content.decode()
    client.post(url, {"public_title": "Slow checkouts", "public_impact": "Payments take a minute."})
    incident.refresh_from_db()
    assert (incident.public_title, incident.public_impact) == ("Slow checkouts", "Payments take a minute.")


def test_the_api_sets_it_for_communications_only(client, world):
    incident = declare(INTERNAL, services=[world["checkout"]])
    body = {"incident": incident.reference, "public_title": "Slow checkouts", "public_impact": "Slow."}
    client.force_login(UserFactory(username="rita", groups=["Responders"]))
    assert client.post("/api/v1/updates/public-identity/", body, content_type="application/json").status_code == 403
    client.force_login(world["comms"])
    response = client.post("/api/v1/updates/public-identity/", body, content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "incident": incident.reference, "public_title": "Slow checkouts", "public_impact": "Slow.",
        "public_name": "Slow checkouts",
    }  # fmt: skip
    bad = client.post(
        "/api/v1/updates/public-identity/", {**body, "public_title": incident.reference}, content_type="application/json"
    )
    assert bad.status_code == 400 and "never shown publicly" in bad.content.decode() and "public_title" in bad.content.decode()
