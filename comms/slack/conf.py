"""The Slack app's settings and its Web API client.

With no bot token or no signing secret the app is off: its endpoints answer 503 with a message and
incident changes enqueue nothing.
"""

from django.conf import settings
from slack_sdk import WebClient


def slack_enabled():
    return bool(settings.SLACK_BOT_TOKEN and settings.SLACK_SIGNING_SECRET)


def slack_client(*, timeout=None):
    """The Web API client. No retries inside it: the outbox retries with backoff and Retry-After."""
    base_url = settings.SLACK_API_URL
    if not base_url.endswith("/"):
        base_url += "/"
    return WebClient(
        token=settings.SLACK_BOT_TOKEN,
        base_url=base_url,
        timeout=timeout or settings.SLACK_TIMEOUT_SECONDS,
        retry_handlers=[],
    )


def request_path_client():
    """For the two calls made while Slack waits for our answer (users.info, views.open): a short timeout."""
    return slack_client(timeout=settings.SLACK_REQUEST_TIMEOUT_SECONDS)
