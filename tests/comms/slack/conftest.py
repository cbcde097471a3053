import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import pytest

from tests.comms.slack.fake_slack import start_fake_slack
from tests.incidents.factories import SeverityFactory, UserFactory

SECRET = "test-signing-secret-5f1d"
ANNOUNCE = "C0ANNOUNCE"


def sign(body, *, secret=SECRET, timestamp=None):
    """The headers Slack sends: X-Slack-Signature = v0= + HMAC-SHA256(secret, "v0:{ts}:{raw body}")."""
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    raw = body if isinstance(body, bytes) else body.encode()
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": timestamp, "HTTP_X_SLACK_SIGNATURE": f"v0={digest}"}


class SlackPoster:
    """Posts to our endpoints the way Slack does, signed (or not, or stale, when a test says so)."""

    def __init__(self, client):
        self.client = client

    def _post(self, path, body, content_type, signed=True, timestamp=None, secret=SECRET, **headers):
        if signed:
            headers.update(sign(body, secret=secret, timestamp=timestamp))
        return self.client.generic("POST", path, body, content_type=content_type, **headers)

    def command(
        self, text, *, user="U0RITA", channel="C0GENERAL", trigger_id="13345224609.738474920.8088930838d88f008e0", **kw
    ):
        body = urlencode(
            {
                "token": "legacy-ignored",
                "team_id": "T0001",
                "team_domain": "example",
                "channel_id": channel,
                "channel_name": "general",
                "user_id": user,
                "user_name": user.lower(),
                "command": "/incident",
                "text": text,
                "response_url": "https://hooks.slack.example.com/commands/T0001/1/abc",
                "trigger_id": trigger_id,
            }
        )
        return self._post("/integrations/slack/commands", body, "application/x-www-form-urlencoded", **kw)

    def interaction(self, payload, **kw):
        body = urlencode({"payload": json.dumps(payload)})
        return self._post("/integrations/slack/interactions", body, "application/x-www-form-urlencoded", **kw)

    def event(self, payload, **kw):
        return self._post("/integrations/slack/events", json.dumps(payload), "application/json", **kw)


@pytest.fixture
def fake_slack():
    fake = start_fake_slack()
    yield fake
    fake.stop()


@pytest.fixture
def slack(settings, fake_slack):
    """The Slack app on, talking to the fake Web API; Celery tasks run in-process."""
    settings.SLACK_BOT_TOKEN = "xoxb-test-token"
    settings.SLACK_SIGNING_SECRET = SECRET
    settings.SLACK_API_URL = fake_slack.url
    settings.SLACK_ANNOUNCE_CHANNEL = ANNOUNCE
    settings.SLACK_RETRY_BASE_SECONDS = 1
    settings.CELERY_TASK_ALWAYS_EAGER = True
    fake_slack.add_user("U0RITA", "rita@example.com", "Rita Responder")
    fake_slack.add_user("U0ALICE", "alice@example.com", "Alice Nguyen")
    fake_slack.add_user("U0VICTOR", "victor@example.com", "Victor Viewer")
    fake_slack.add_user("U0NOBODY", "nobody@example.com", "No Account")
    return fake_slack


@pytest.fixture
def poster(client):
    return SlackPoster(client)


@pytest.fixture
def alice(db):
    return UserFactory(username="alice", groups=["Responders"])


@pytest.fixture
def severities(db):
    return {level: SeverityFactory(level=level) for level in (1, 2, 3, 4)}
