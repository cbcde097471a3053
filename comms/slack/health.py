"""Is Slack connected? auth.test with the bot token, for the admin page (a short timeout: a person waits)."""

from dataclasses import dataclass

from django.conf import settings
from slack_sdk.errors import SlackApiError

from .conf import request_path_client, slack_enabled


@dataclass(frozen=True)
class Connection:
    configured: bool
    ok: bool = False
    team: str = ""
    bot: str = ""
    error: str = ""


def slack_connection_check():
    if not slack_enabled():
        missing = [name for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET") if not getattr(settings, name)]
        return Connection(configured=False, error=f"Not configured: set {' and '.join(missing)}.")
    try:
        answer = request_path_client().auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        return Connection(configured=True, error=f"Slack answered HTTP {exc.response.status_code}: {error or 'error'}.")
    except Exception as exc:  # noqa: BLE001 - unreachable, timeout: shown on the page
        return Connection(configured=True, error=f"Slack could not be reached: {type(exc).__name__}: {exc}")
    return Connection(
        configured=True, ok=True, team=answer.get("team") or "", bot=answer.get("user") or answer.get("user_id") or ""
    )
