"""Every request from Slack is signed: v0 HMAC-SHA256 of `v0:{timestamp}:{raw body}` with the signing secret.

slack_sdk's SignatureVerifier computes it, compares in constant time and refuses a timestamp more than
five minutes away (a replay). The raw body is checked as received, before any parsing.
"""

from functools import wraps

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from slack_sdk.signature import Clock, SignatureVerifier

from .conf import slack_enabled

NOT_CONFIGURED = (
    "The Slack app is not configured on this server: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
    "(see the README, section Slack)."
)


def request_verified(request, *, clock=None):
    verifier = SignatureVerifier(settings.SLACK_SIGNING_SECRET, clock=clock or Clock())
    try:
        return verifier.is_valid(
            body=request.body,
            timestamp=request.headers.get("X-Slack-Request-Timestamp"),
            signature=request.headers.get("X-Slack-Signature"),
        )
    except (ValueError, UnicodeDecodeError):  # a timestamp that is not a number, a body that is not UTF-8
        return False


def slack_endpoint(view):
    """POST only, off (503) without settings, 401 for anything not signed by Slack in the last 5 minutes."""

    @csrf_exempt
    @require_POST
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not slack_enabled():
            return HttpResponse(NOT_CONFIGURED, status=503, content_type="text/plain")
        if not request_verified(request):
            return HttpResponse("Invalid or stale Slack signature.", status=401, content_type="text/plain")
        return view(request, *args, **kwargs)

    return wrapper
