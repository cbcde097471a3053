"""The admin page: whether Slack is connected (auth.test), calls waiting, the last errors, send again."""

import pytest

from comms.slack.models import SlackCall
from tests.incidents.factories import declare

pytestmark = pytest.mark.django_db

URL = "/admin/comms/slackcall/"


def test_connected_with_waiting_and_failed_calls_and_their_errors(
    slack, admin_client, severities, django_capture_on_commit_callbacks
):
    severities[1].slack_channel = False
    severities[1].save()
    slack.script["chat.postMessage"] = [(200, {}, {"ok": False, "error": "channel_not_found"})]
    with django_capture_on_commit_callbacks(execute=True):
        incident = declare("Checkout errors", severity=severities[1], actor=None)
    page = admin_client.get(URL).content.decode()
    assert "Connected</strong> to Example as incidents" in page
    assert "auth.test" in page and slack.methods().count("auth.test") == 1
    assert "chat.postMessage: HTTP 200, channel_not_found. Not retried" in page
    assert incident.reference in page

    call = SlackCall.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(URL, {"action": "send_again", "_selected_action": [call.pk]}, follow=True)
    assert "1 call(s) will be sent again." in response.content.decode()
    call.refresh_from_db()
    assert call.state == "done"


def test_slack_answering_badly_is_shown(slack, admin_client):
    slack.script["auth.test"] = [(200, {}, {"ok": False, "error": "invalid_auth"})]
    page = admin_client.get(URL).content.decode()
    assert "Not working.</strong> Slack answered HTTP 200: invalid_auth." in page


def test_off_when_not_configured(settings, admin_client):
    settings.SLACK_BOT_TOKEN = settings.SLACK_SIGNING_SECRET = ""
    page = admin_client.get(URL).content.decode()
    assert "Off.</strong> Not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET." in page


def test_people_without_the_permission_do_not_see_it(client, responder):
    client.force_login(responder)
    assert client.get(URL).status_code == 403


def test_rows_of_a_restricted_incident_are_hidden_from_who_may_not_see_it(slack, client, severities):
    from django.contrib.auth.models import Permission

    from comms.slack.models import SlackChannel, SlackEvent
    from tests.incidents.factories import UserFactory

    secret = declare("Leaked credentials", severity=severities[1], actor=None, restricted=True)
    SlackCall.objects.create(kind="channel_sync", incident=secret, last_error="boom")
    SlackEvent.objects.create(
        event_id="Ev0SECRET", kind="message", incident=secret, payload={"event": {"text": "note: keys"}}
    )
    SlackChannel.objects.create(incident=secret, channel_id="G0SECRET", name="inc-leaked-credentials")
    auditor = UserFactory(username="auditor")
    auditor.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_slackcall", "view_slackevent", "view_slackchannel"])
    )
    client.force_login(auditor)
    for url in (URL, "/admin/comms/slackevent/", "/admin/comms/slackchannel/"):
        page = client.get(url).content.decode()
        assert "Leaked credentials" not in page and secret.reference not in page and "G0SECRET" not in page, url
        assert "0 Slack" in page, url


def test_the_incident_page_shows_its_slack_channel_and_calls_in_trouble(
    slack, admin_client, severities, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    from comms.slack.admin import incident_slack

    slack.script["conversations.setTopic"] = [(200, {}, {"ok": False, "error": "missing_scope"})]
    with django_capture_on_commit_callbacks(execute=True):
        incident = declare("Checkout errors", severity=severities[1], actor=None, restricted=True)
    page = admin_client.get(reverse("admin:incidents_incident_panels", args=[incident.pk])).content.decode()
    assert "Slack" in page
    assert f"#inc-{incident.number}-checkout-errors</a> (private)" in page
    assert "0 waiting, 1 failed" in page
    low = declare("Typo", severity=severities[4], actor=None)
    request = admin_client.get("/admin/").wsgi_request
    assert incident_slack(request, low) == [("Slack", "this severity opens no channel")]
