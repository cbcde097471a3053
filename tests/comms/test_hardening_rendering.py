"""Issue 11: update bodies render in linear time and have a length cap; Slack-compatible payloads escape
mentions."""

import json
from unittest import mock

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from comms import rendering
from comms import services as comms
from comms.models import Delivery, Update
from tests.comms.factories import SubscriberFactory, UpdateFactory
from tests.comms.test_deliveries import answering, posted
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare

pytestmark = pytest.mark.django_db


def test_pathological_markdown_renders(settings):
    # Python-Markdown spent over 120 s on this; the CommonMark parser is linear, so the suite just runs it.
    assert rendering.markdown_render("[" * 50_000) == "<p>" + "[" * 50_000 + "</p>"
    for text in ("[a](" * 20_000, "*a " * 30_000, "<" * 50_000, "`" * 50_000, "> " * 20_000):
        assert rendering.markdown_render(text)


def test_rendering_keeps_the_supported_markdown():
    html = rendering.markdown_render("**bold**, _it_, `code`, ~~old~~\n\n- a\n- b\n\n| x | y |\n|---|---|\n| 1 | 2 |")
    for tag in ("<strong>bold</strong>", "<em>it</em>", "<code>code</code>", "<s>old</s>", "<li>a</li>", "<td>1</td>"):
        assert tag in html
    assert rendering.markdown_render("New plan.") == "<p>New plan.</p>"


@pytest.fixture
def incident(db):
    checkout = ServiceFactory(slug="checkout", name="Checkout", is_public=True)
    return declare("Checkout errors", severity=SeverityFactory(level=3), services=[checkout])


def test_a_body_over_the_cap_is_refused_in_the_services_and_the_api(incident, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
    writer = UserFactory(username="wendy", groups=["Communications"])
    too_long = "[" * (rendering.BODY_MAX_CHARS + 1)
    with pytest.raises(comms.UpdateError, match="at most 20,000"):
        comms.update_draft_create(
            incident=incident, actor=writer, audience="external", public_status="investigating", body=too_long
        )
    api = APIClient()
    api.force_authenticate(writer)
    response = api.post(
        "/api/v1/updates/",
        {"incident": incident.reference, "audience": "external", "public_status": "investigating", "body": too_long},
        format="json",
    )
    assert response.status_code == 400 and "body" in json.dumps(response.json())
    assert not Update.objects.exists()
    # At the cap it is accepted.
    comms.update_draft_create(
        incident=incident,
        actor=writer,
        audience="external",
        public_status="investigating",
        body="[" * rendering.BODY_MAX_CHARS,
    )


def test_a_body_over_the_cap_is_a_form_error_in_the_admin(incident, client):
    writer = UserFactory(username="wendy", groups=["Communications"])
    client.force_login(writer)
    response = client.post(
        "/admin/comms/update/add/",
        {
            "incident": incident.pk,
            "audience": "external",
            "public_status": "investigating",
            "title": "Errors",
            "body": "x" * (rendering.BODY_MAX_CHARS + 1),
        },
    )
    assert response.status_code == 200 and "at most 20,000" in response.content.decode()
    assert not Update.objects.exists()


def test_slack_payloads_escape_mentions_and_links(incident, django_capture_on_commit_callbacks):
    SubscriberFactory(channel="slack", email="", url="https://slack.example.com/T1")
    update = UpdateFactory(
        incident=incident,
        audience="external",
        title="Checkout <!here> errors",
        body="Hi <!channel> and <@U024BE7LH>, see <https://evil.example.com|the fix> & more.",
    )
    Update.objects.filter(pk=update.pk).update(status=Update.Status.PUBLISHED, published_at=timezone.now())
    update.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False):
        comms.update_deliveries_create(update=update)
    with mock.patch("comms.webhooks.host_resolve", return_value=("93.184.216.34",)):
        with answering(lambda host: (200, "ok")) as post:
            comms.deliveries_send(delivery_ids=list(Delivery.objects.values_list("pk", flat=True)))
    text = posted(post)["slack.example.com"]["text"]
    assert "<!channel>" not in text and "<!here>" not in text and "<@U024BE7LH>" not in text
    assert "&lt;!channel&gt;" in text and "&lt;https://evil.example.com|the fix&gt; &amp; more" in text
    assert text.endswith("|Status page>")  # our own link still works
