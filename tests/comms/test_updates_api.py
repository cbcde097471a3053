"""/api/v1/updates/: drafts, the workflow actions, errors, visibility and query counts."""

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from comms import services as comms
from comms.models import Update, UpdateTemplate
from incidents.models import TimelineEvent
from tests.api import api_client_for as api
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db

URL = "/api/v1/updates/"


@pytest.fixture(autouse=True)
def no_throttling(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
    cache.clear()


@pytest.fixture
def sev1(db):
    sev = SeverityFactory(level=1)
    sev.update_approval_required = True
    sev.save()
    return sev


@pytest.fixture
def writer(db):
    return UserFactory(username="wendy", groups=["Communications"])


@pytest.fixture
def reviewer(db):
    return UserFactory(username="ravi", groups=["Communications"])


@pytest.fixture
def checkout(db):
    return ServiceFactory(slug="checkout", name="Checkout", is_public=True)


@pytest.fixture
def incident(sev1, checkout):
    return declare("Checkout errors", severity=sev1, services=[checkout])


def test_draft_submit_approve_publish(writer, reviewer, incident, checkout):
    client = api(writer)
    template = UpdateTemplate.objects.get(name="Investigating")
    response = client.post(
        URL,
        {
            "incident": incident.reference,
            "template": template.pk,
            "components": [{"service": "checkout", "status": "major_outage"}],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "draft" and body["audience"] == "external" and body["public_status"] == "investigating"
    assert body["incident"] == incident.reference and body["author"] == "wendy" and body["template"] == template.pk
    assert body["components"] == [{"service": "checkout", "name": "Checkout", "status": "major_outage"}]
    assert "Checkout" in body["body_html"] and body["approval_required"] is True
    assert response["Location"].endswith(f"{URL}{body['id']}/")
    detail = f"{URL}{body['id']}/"

    response = client.patch(detail, {"body": "Payments fail at **checkout**.", "title": "Payments"}, format="json")
    assert response.status_code == 200 and "<strong>checkout</strong>" in response.json()["body_html"]
    response = client.post(f"{detail}publish/")
    assert response.status_code == 409 and response.json()["error"]["code"] == "invalid_step"
    assert client.post(f"{detail}submit/").json()["status"] == "in_review"
    response = client.patch(detail, {"body": "Changed in review"}, format="json")
    assert response.status_code == 409 and "Only drafts" in response.json()["error"]["message"]
    response = client.post(f"{detail}approve/")
    assert response.status_code == 409 and "someone other than" in response.json()["error"]["message"]

    response = api(reviewer).post(f"{detail}approve/")
    assert response.status_code == 200 and response.json()["approved_by"] == "ravi"
    response = client.post(f"{detail}publish/")
    assert response.status_code == 200
    published = response.json()
    assert published["status"] == "published" and published["published_by"] == "wendy"
    assert client.post(f"{detail}publish/").json()["published_at"] == published["published_at"]  # no-op
    assert TimelineEvent.objects.filter(incident=incident, kind=TimelineEvent.Kind.UPDATE_PUBLISHED).count() == 1

    response = client.post(f"{detail}correct/", {"body": "It was payments, not checkout."}, format="json")
    assert response.status_code == 201
    correction = response.json()
    assert correction["corrects"] == published["id"] and correction["status"] == "draft"
    assert client.get(detail).json()["body"] == published["body"]


def test_free_text_internal_update_and_bad_input(writer, incident):
    client = api(writer)
    response = client.post(
        URL, {"incident": incident.reference, "audience": "internal", "body": "Rollback at 14:05."}, format="json"
    )
    assert response.status_code == 201 and response.json()["approval_required"] is False
    detail = f"{URL}{response.json()['id']}/"
    assert client.post(f"{detail}publish/").json()["status"] == "published"
    for payload, field in (
        (
            {
                "incident": incident.reference,
                "audience": "external",
                "body": "Hi {{ user.password }}",
                "public_status": "investigating",
            },
            "body",
        ),
        (
            {
                "incident": incident.reference,
                "audience": "external",
                "title": "{% load x %}{{ x.__class__ }}",
                "body": "b",
                "public_status": "investigating",
            },
            "title",
        ),
        ({"incident": "INC-999999", "audience": "internal", "body": "x"}, "incident"),
        (
            {
                "incident": incident.reference,
                "audience": "internal",
                "body": "x",
                "components": [{"service": "checkout", "status": "exploded"}],
            },
            "components",
        ),
    ):
        response = client.post(URL, payload, format="json")
        assert response.status_code == 400, (payload, response.content)
        assert field in response.json()["error"]["fields"], (payload, response.json())
    response = client.post(URL, {"incident": incident.reference, "audience": "external", "body": "x"}, format="json")
    assert response.status_code == 400 and "public status" in response.json()["error"]["message"]


def test_permissions(writer, incident):
    viewer = UserFactory(username="victor", groups=["Viewers"])
    responder = UserFactory(username="rita", groups=["Responders"])
    update = comms.update_draft_create(
        incident=incident, actor=writer, audience="external", public_status="investigating", body="x"
    )
    detail = f"{URL}{update.pk}/"
    assert api(viewer).get(detail).status_code == 200
    for step in ("submit", "approve", "publish", "correct", "send-back"):
        assert api(viewer).post(f"{detail}{step}/").status_code == 403, step
    assert (
        api(viewer).post(URL, {"incident": incident.reference, "audience": "internal", "body": "x"}).status_code == 403
    )
    comms.update_submit(update=update, actor=writer)
    assert api(responder).post(f"{detail}approve/").status_code == 403
    assert api(responder).post(f"{detail}publish/").status_code in (403, 409)
    assert Update.objects.get(pk=update.pk).status == "in_review"


def test_restricted_incidents_updates_are_404_and_unlisted(writer, incident):
    secret = declare("Payroll leak", restricted=True)
    hidden = comms.update_draft_create(incident=secret, actor=None, audience="internal", body="Quokka")
    client = api(writer)
    assert client.get(f"{URL}{hidden.pk}/").status_code == 404
    assert client.post(f"{URL}{hidden.pk}/publish/").status_code == 404
    assert client.patch(f"{URL}{hidden.pk}/", {"body": "x"}, format="json").status_code == 404
    assert "Quokka" not in client.get(URL).content.decode()
    assert client.get(URL, {"incident": secret.reference}).json()["results"] == []
    response = client.post(URL, {"incident": secret.reference, "audience": "internal", "body": "x"}, format="json")
    assert response.status_code == 400 and "There is no incident" in response.content.decode()
    assert Update.objects.get(pk=hidden.pk).status == "draft"


def test_filters(writer, incident, sev1):
    other = declare("Search slow", severity=sev1)
    comms.update_draft_create(incident=incident, actor=writer, audience="internal", body="a")
    comms.update_draft_create(
        incident=incident, actor=writer, audience="external", public_status="monitoring", body="b"
    )
    comms.update_draft_create(incident=other, actor=writer, audience="internal", body="c")
    client = api(writer)

    def bodies(**query):
        response = client.get(URL, query)
        assert response.status_code == 200, response.content
        return sorted(u["body"] for u in response.json()["results"])

    assert bodies() == ["a", "b", "c"]
    assert bodies(incident=incident.reference) == ["a", "b"]
    assert bodies(audience="internal") == ["a", "c"]
    assert bodies(public_status="monitoring") == ["b"]
    assert bodies(status="draft,published") == ["a", "b", "c"]
    assert bodies(status="published") == []
    assert client.get(URL, {"incident": "nonsense"}).status_code == 400


def test_list_queries_do_not_grow_with_page_size(writer, incident, checkout):
    for n in range(4):
        comms.update_draft_create(
            incident=declare(f"Incident {n}", severity=incident.severity, services=[checkout]),
            actor=writer,
            audience="external",
            public_status="investigating",
            body=f"Update {n}",
            components=[(checkout, "degraded_performance")],
        )
    restricted = declare("Hidden", restricted=True)
    comms.update_draft_create(incident=restricted, actor=None, audience="internal", body="hidden")
    client = api(writer)
    client.get(URL)  # the key's first use writes last_used_at once
    counts, lengths = [], []
    for size in (1, 100):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(URL, {"page_size": size, "audience": "external,internal"})
        assert response.status_code == 200
        counts.append(len(queries))
        lengths.append(len(response.json()["results"]))
    assert lengths == [1, 4]
    assert counts[0] == counts[1], counts


def test_templates_are_listed(writer):
    response = api(writer).get("/api/v1/update-templates/")
    assert response.status_code == 200
    assert {"Investigating", "Resolved", "Internal status update"} <= {t["name"] for t in response.json()["results"]}


def test_templates_filter_by_what_fits(writer, sev1):
    UpdateTemplate.objects.create(name="Sev1 major", audience="external", public_status="", severity=sev1, body="x")
    client = api(writer)

    def names(**query):
        response = client.get("/api/v1/update-templates/", query)
        assert response.status_code == 200, response.content
        return {t["name"] for t in response.json()["results"]}

    assert names(audience="internal") == {"Internal status update"}
    assert names(audience="external", public_status="resolved", severity=3) == {"Resolved"}
    assert names(audience="external", public_status="resolved", severity=1) == {"Resolved", "Sev1 major"}
    assert client.get("/api/v1/update-templates/", {"active": "maybe"}).status_code == 400
