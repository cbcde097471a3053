"""The Slack admin page in a real browser, on a laptop and on a phone: connection, waiting calls, last errors."""

import os
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from comms.slack.models import SlackCall
from tests.comms.slack.fake_slack import start_fake_slack
from tests.incidents.factories import SeverityFactory, declare

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

SHOTS = os.environ.get("SCREENSHOT_DIR", "")


@pytest.mark.parametrize("width, height", [(1440, 900), (390, 844)])
def test_the_slack_page_shows_the_connection_and_what_waits_or_failed(settings, live_server, page, width, height):
    fake = start_fake_slack()
    try:
        settings.SLACK_BOT_TOKEN, settings.SLACK_SIGNING_SECRET = "xoxb-test-token", "secret"
        settings.SLACK_API_URL, settings.SLACK_ANNOUNCE_CHANNEL = fake.url, "C0ANNOUNCE"
        incident = declare("Checkout payments failing for EU cards", severity=SeverityFactory(level=1), actor=None)
        now = timezone.now()
        SlackCall.objects.create(
            kind="announce",
            incident=incident,
            state="pending",
            attempts=2,
            last_attempt_at=now,
            next_attempt_at=now + timedelta(seconds=16),
            payload={"text": "…"},
            last_error="chat.postMessage: HTTP 429, ratelimited. Slack asked us to wait 30 s.",
        )
        SlackCall.objects.create(
            kind="channel_open",
            incident=incident,
            state="failed",
            attempts=1,
            last_attempt_at=now,
            last_error="conversations.create: HTTP 200, missing_scope. Not retried: fix the cause, then send it again.",
        )
        get_user_model().objects.create_superuser("admin", "admin@example.com", "correct-horse-battery")
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live_server.url}/admin/login/?next=/admin/comms/slackcall/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "correct-horse-battery")
        page.click("input[type=submit]")
        page.wait_for_selector("text=Slack connection")
        panel = page.locator(".slack-status")
        text = panel.inner_text()
        assert "Connected to Example as incidents" in text
        assert "missing_scope" in text and "ratelimited" in text
        # Nothing in the panel is cut off or pushes the page sideways on a phone.
        assert panel.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
        if SHOTS:
            page.screenshot(path=os.path.join(SHOTS, f"slack-admin-{width}x{height}.png"), full_page=True)
    finally:
        fake.stop()


@pytest.mark.parametrize("width, height", [(1440, 900), (390, 844)])
def test_the_incident_page_shows_the_slack_channel(settings, live_server, page, width, height):
    from comms.slack.models import SlackChannel

    settings.SLACK_BOT_TOKEN, settings.SLACK_SIGNING_SECRET = "xoxb-test-token", "secret"
    settings.SLACK_API_URL = "http://127.0.0.1:9/api/"  # nothing is sent in this test
    incident = declare("Checkout payments failing for EU cards", severity=SeverityFactory(level=2), actor=None)
    SlackChannel.objects.update_or_create(
        incident=incident,
        defaults={"channel_id": "C0123ABCD", "name": f"inc-{incident.number}-checkout-payments-failing-for-eu-cards"},
    )
    get_user_model().objects.create_superuser("admin", "admin@example.com", "correct-horse-battery")
    page.set_viewport_size({"width": width, "height": height})
    url = f"/admin/incidents/incident/{incident.pk}/change/"
    page.goto(f"{live_server.url}/admin/login/?next={url}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    link = page.locator("a[href='https://slack.com/app_redirect?channel=C0123ABCD']")
    link.wait_for()
    assert link.inner_text() == f"#inc-{incident.number}-checkout-payments-failing-for-eu-cards"
    if SHOTS:
        link.scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(SHOTS, f"slack-incident-page-{width}x{height}.png"), full_page=True)
