"""Payloads in the shapes Slack sends them (block_actions, view_submission, event_callback)."""

import itertools

_ids = itertools.count(1)


def declare_submission(
    *, title, level, services=(), restricted=False, user="U0RITA", view_id=None, channel="C0GENERAL"
):
    values = {
        "title": {"value": {"type": "plain_text_input", "value": title}},
        "severity": {"value": {"type": "static_select", "selected_option": {"value": str(level)}}},
        "services": {"value": {"type": "multi_static_select", "selected_options": [{"value": s} for s in services]}},
        "restricted": {
            "value": {"type": "checkboxes", "selected_options": [{"value": "restricted"}] if restricted else []}
        },
    }
    return {
        "type": "view_submission",
        "team": {"id": "T0001"},
        "user": {"id": user, "name": user.lower()},
        "view": {
            "id": view_id or f"V0{next(_ids):05d}",
            "callback_id": "incident_declare",
            "private_metadata": channel,
            "state": {"values": values},
        },
    }


def button_press(*, action_id, incident, channel, message_ts, user="U0RITA"):
    return {
        "type": "block_actions",
        "team": {"id": "T0001"},
        "user": {"id": user},
        "channel": {"id": channel},
        "message": {"ts": message_ts},
        "response_url": "https://hooks.slack.example.com/actions/T0001/1/abc",
        "actions": [
            {"type": "button", "action_id": action_id, "value": str(incident.pk), "block_id": "incident_header"}
        ],
    }


def event_callback(event, *, event_id=None):
    return {
        "token": "legacy-ignored",
        "team_id": "T0001",
        "api_app_id": "A0001",
        "type": "event_callback",
        "event_id": event_id or f"Ev0{next(_ids):08d}",
        "event_time": 1700000000,
        "event": event,
    }


def pin(*, channel, ts, user="U0RITA", author="U0ALICE"):
    return {
        "type": "reaction_added",
        "user": user,
        "reaction": "pushpin",
        "item_user": author,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": ts,
    }
