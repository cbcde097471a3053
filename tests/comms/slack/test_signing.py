"""Every request is verified as Slack signs it; anything else is 401 and changes nothing."""

import time

import pytest
from django.test import RequestFactory
from slack_sdk.signature import SignatureVerifier

from comms.slack.models import SlackCall, SlackEvent
from comms.slack.signing import request_verified
from incidents.models import Incident
from tests.comms.slack.helpers import declare_submission, event_callback, pin
from tests.incidents.factories import declare

# Slack's documented example ("Verifying requests from Slack"), used as a test vector.
VECTOR_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
VECTOR_TIMESTAMP = "1531420618"
VECTOR_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
VECTOR_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


class At:
    def __init__(self, when):
        self.when = when

    def now(self):
        return self.when


def _vector_request(body=VECTOR_BODY, signature=VECTOR_SIGNATURE, timestamp=VECTOR_TIMESTAMP):
    return RequestFactory().post(
        "/integrations/slack/commands",
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp,
        HTTP_X_SLACK_SIGNATURE=signature,
    )


def test_slacks_documented_example_verifies(settings):
    from tests.comms.slack.conftest import sign

    assert (
        sign(VECTOR_BODY, secret=VECTOR_SECRET, timestamp=VECTOR_TIMESTAMP)["HTTP_X_SLACK_SIGNATURE"]
        == VECTOR_SIGNATURE
    )
    verifier = SignatureVerifier(VECTOR_SECRET, clock=At(int(VECTOR_TIMESTAMP) + 10))
    assert verifier.is_valid(body=VECTOR_BODY, timestamp=VECTOR_TIMESTAMP, signature=VECTOR_SIGNATURE)
    settings.SLACK_SIGNING_SECRET = VECTOR_SECRET
    assert request_verified(_vector_request(), clock=At(int(VECTOR_TIMESTAMP) + 10))


@pytest.mark.parametrize(
    "request_kwargs, clock",
    [
        ({"body": VECTOR_BODY.replace("roadrunner", "roadrunnes")}, 10),  # one byte of the body changed
        ({"signature": VECTOR_SIGNATURE[:-1] + "0"}, 10),  # the signature changed
        ({"signature": ""}, 10),
        ({"timestamp": "soon"}, 10),
        ({}, 5 * 60 + 1),  # replayed more than five minutes later
        ({}, -(5 * 60 + 1)),  # or dated too far ahead
    ],
)
def test_anything_else_is_refused(settings, request_kwargs, clock):
    settings.SLACK_SIGNING_SECRET = VECTOR_SECRET
    assert not request_verified(_vector_request(**request_kwargs), clock=At(int(VECTOR_TIMESTAMP) + clock))


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["unsigned", "stale", "wrong secret"])
def test_unsigned_or_stale_requests_are_401_and_change_nothing(slack, poster, responder, severities, how):
    options = {
        "unsigned": {"signed": False},
        "stale": {"timestamp": int(time.time()) - 6 * 60},
        "wrong secret": {"secret": "not-the-secret"},
    }[how]
    incident = declare("Checkout errors", actor=None)
    before = incident.timeline.count()
    responses = [
        poster.command("declare Checkout is down", **options),
        poster.interaction(declare_submission(title="Checkout is down", level=1), **options),
        poster.event(event_callback(pin(channel="C0INCIDENT", ts="1700000000.000100")), **options),
        poster.event({"type": "url_verification", "challenge": "abc"}, **options),
    ]
    assert [r.status_code for r in responses] == [401, 401, 401, 401]
    assert Incident.objects.count() == 1 and incident.timeline.count() == before
    assert not SlackEvent.objects.exists() and not SlackCall.objects.exists()
    assert slack.calls == []  # not even a users.info


@pytest.mark.django_db
def test_the_events_url_verification_challenge_is_answered(slack, poster):
    response = poster.event(
        {"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}
    )
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


@pytest.mark.django_db
def test_without_token_and_secret_the_app_is_off_and_nothing_is_enqueued(
    settings, client, responder, django_capture_on_commit_callbacks
):
    settings.SLACK_BOT_TOKEN = settings.SLACK_SIGNING_SECRET = ""
    for path in ("commands", "interactions", "events"):
        response = client.post(f"/integrations/slack/{path}", "x=1", content_type="application/x-www-form-urlencoded")
        assert response.status_code == 503
        assert b"SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET" in response.content
    with django_capture_on_commit_callbacks(execute=True):
        declare("Checkout errors", actor=responder)
    assert not SlackCall.objects.exists()


@pytest.mark.django_db
def test_only_post_is_accepted(slack, client):
    assert client.get("/integrations/slack/events").status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path, body, content_type",
    [
        ("interactions", "payload=not-json", "application/x-www-form-urlencoded"),
        ("interactions", "payload=%5B1%2C2%5D", "application/x-www-form-urlencoded"),
        ("interactions", "nothing=here", "application/x-www-form-urlencoded"),
        ("events", "{not json", "application/json"),
        ("events", "[1, 2]", "application/json"),
    ],
)
def test_signed_but_malformed_bodies_are_400(slack, poster, path, body, content_type):
    response = poster._post(f"/integrations/slack/{path}", body, content_type)
    assert response.status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload",
    [
        {"type": "block_actions", "user": "U0RITA", "actions": "press"},
        {"type": "block_actions", "user": {"id": ["U0RITA"]}, "actions": [None]},
        {"type": "view_submission", "view": {"callback_id": "incident_declare", "state": {"values": []}}},
        {
            "type": "view_submission",
            "user": {"id": "U0RITA"},
            "view": {
                "callback_id": "incident_declare",
                "id": 7,
                "state": {
                    "values": {
                        "title": {"value": {"value": "x" * 300}},
                        "severity": {"value": {"selected_option": {"value": "1"}}},
                    }
                },
            },
        },
        {"type": "shortcut"},
    ],
)
def test_odd_payloads_never_500_and_change_nothing(slack, poster, responder, severities, payload):
    response = poster.interaction(payload)
    assert response.status_code == 200
    assert not Incident.objects.exists()


@pytest.mark.django_db
def test_odd_events_are_ignored(slack, poster):
    for event in (
        {"type": "event_callback", "event_id": "Ev1", "event": "text"},
        {"type": "event_callback", "event_id": ["Ev1"], "event": {}},
        {
            "type": "event_callback",
            "event_id": "Ev2",
            "event": {"type": "reaction_added", "reaction": "pushpin", "item": "x"},
        },
    ):
        assert poster.event(event).status_code == 200
    assert not SlackEvent.objects.exists()
