"""docs/slack/manifest.yml installs what the code needs: its URLs are ours, its scopes cover every call."""

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.urls import resolve

from comms.slack import views

yaml = pytest.importorskip("yaml")

MANIFEST = Path(__file__).resolve().parents[3] / "docs" / "slack" / "manifest.yml"


def test_the_manifest_points_slack_at_our_three_endpoints_with_the_scopes_we_use():
    manifest = yaml.safe_load(MANIFEST.read_text())
    [command] = manifest["features"]["slash_commands"]
    settings = manifest["settings"]
    urls = {
        views.commands: command["url"],
        views.interactions: settings["interactivity"]["request_url"],
        views.events: settings["event_subscriptions"]["request_url"],
    }
    for view, url in urls.items():
        parts = urlsplit(url)
        assert parts.scheme == "https" and parts.hostname.endswith("example.com")
        assert resolve(parts.path).func is view
    assert command["command"] == "/incident" and command["should_escape"] is True
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "message.channels",
        "message.groups",
        "reaction_added",
    }
    assert settings["interactivity"]["is_enabled"] is True
    assert set(manifest["oauth_config"]["scopes"]["bot"]) >= {
        "commands",
        "chat:write",
        "chat:write.public",
        "channels:manage",
        "groups:write",
        "channels:history",
        "groups:history",
        "reactions:read",
        "pins:write",
        "users:read",
        "users:read.email",
    }
