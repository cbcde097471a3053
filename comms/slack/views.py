"""The three endpoints Slack posts to. Every one is signed (signing.slack_endpoint) and answers at once.

Two Web API calls happen while Slack waits, with a short timeout (SLACK_REQUEST_TIMEOUT_SECONDS):
users.info, to know who is asking (cached per Slack user), and views.open, which Slack only accepts
within 3 seconds of the command. Everything else Slack needs to hear goes through the outbox (Celery).
"""

import json

from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse

from .actions import button_press, command_execute, declare_form_open, incident_for_channel, slack_declare
from .blocks import DECLARE_CALLBACK
from .commands import HELP, CommandError, command_parse
from .conf import request_path_client
from .inbound import slack_event_receive
from .outbox import ephemeral_send
from .people import SlackRefused, django_user_for
from .signing import slack_endpoint

NOT_IN_CHANNEL = (
    "Run this in an incident's channel. To start one: `/incident declare <title>`; for the list: `/incident help`."
)


def _dict(value):
    """A part of Slack's payload that should be an object (anything else reads as empty)."""
    return value if isinstance(value, dict) else {}


def _ephemeral(text):
    return JsonResponse({"response_type": "ephemeral", "text": text})


@slack_endpoint
def commands(request):
    """`/incident …` (form-encoded): help and errors at once, declare opens the modal, the rest act."""
    form = request.POST
    try:
        command = command_parse(form.get("text"))
    except CommandError as exc:
        return _ephemeral(str(exc))
    if command.name == "help":
        return _ephemeral(HELP)
    client = request_path_client()
    try:
        actor = django_user_for(form.get("user_id", ""), client=client)
        if command.name == "declare":
            declare_form_open(
                actor=actor,
                title=command.text,
                trigger_id=form.get("trigger_id", ""),
                channel_id=form.get("channel_id", ""),
                client=client,
            )
            return HttpResponse(status=200)
        incident = incident_for_channel(form.get("channel_id"))
        if incident is None:
            return _ephemeral(NOT_IN_CHANNEL)
        return _ephemeral(command_execute(command=command, actor=actor, incident=incident, client=client))
    except SlackRefused as exc:
        return _ephemeral(str(exc))


def _modal_values(view):
    state = _dict(_dict(view.get("state")).get("values"))

    def value(block):
        return _dict(_dict(state.get(block)).get("value"))

    def selected(block):
        options = value(block).get("selected_options")
        return [_dict(option).get("value") for option in options] if isinstance(options, list) else []

    severity = str(_dict(value("severity").get("selected_option")).get("value") or "")
    return {
        "title": str(value("title").get("value") or ""),
        "level": int(severity) if severity.isdigit() else None,
        "service_slugs": [slug for slug in selected("services") if isinstance(slug, str)],
        "restricted": bool(selected("restricted")),
    }


def _declare_submitted(payload):
    view = _dict(payload.get("view"))
    client = request_path_client()
    try:
        actor = django_user_for(str(_dict(payload.get("user")).get("id", "")), client=client)
        slack_declare(actor=actor, view_id=str(view.get("id", ""))[:80], **_modal_values(view))
    except SlackRefused as exc:
        return JsonResponse({"response_action": "errors", "errors": {"title": str(exc)[:150]}})
    return JsonResponse({"response_action": "clear"})


def _button_pressed(payload):
    user_id = str(_dict(payload.get("user")).get("id", ""))
    channel_id = str(_dict(payload.get("channel")).get("id", ""))
    actions = payload.get("actions") if isinstance(payload.get("actions"), list) else []
    for action in actions[:1]:
        action = _dict(action)
        try:
            actor = django_user_for(user_id, client=request_path_client())
            button_press(action_id=action.get("action_id"), value=action.get("value"), actor=actor)
        except SlackRefused as exc:
            if channel_id:
                ephemeral_send(channel_id=channel_id, slack_user_id=user_id, text=str(exc))
    return HttpResponse(status=200)


@slack_endpoint
def interactions(request):
    """Buttons (block_actions) and the declare modal (view_submission); a `payload` JSON form field."""
    try:
        payload = json.loads(request.POST.get("payload", ""))
    except ValueError:
        return HttpResponseBadRequest("Expected a payload form field with JSON.")
    if not isinstance(payload, dict):
        return HttpResponseBadRequest("Expected a payload form field with a JSON object.")
    if payload.get("type") == "view_submission" and _dict(payload.get("view")).get("callback_id") == DECLARE_CALLBACK:
        return _declare_submitted(payload)
    if payload.get("type") == "block_actions":
        return _button_pressed(payload)
    return HttpResponse(status=200)


@slack_endpoint
def events(request):
    """Events API: the url_verification challenge, then event_callbacks (recorded once, processed by Celery)."""
    try:
        payload = json.loads(request.body)
    except ValueError:
        return HttpResponseBadRequest("Expected JSON.")
    if not isinstance(payload, dict):
        return HttpResponseBadRequest("Expected a JSON object.")
    if payload.get("type") == "url_verification":
        return JsonResponse({"challenge": payload.get("challenge", "")})
    if payload.get("type") == "event_callback":
        slack_event_receive(payload)
    return HttpResponse(status=200)
