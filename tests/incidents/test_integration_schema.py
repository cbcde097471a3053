"""The alert ingestion endpoints in the served OpenAPI schema, and the views answering as it says.

The endpoints are plain Django views that incidents.api.integration_schema adds to the schema. Here:
the served schema has the three operations, their security and their responses; each documented
answer is provoked for real and its status, headers and body checked against the schema; and bodies
that used to get a 500 get a 400 (tests/incidents/test_api_schema.py fuzzes the same operations).
"""

import hashlib
import hmac
import json
import time

import jsonschema
import pytest
from django.conf import settings
from django.test import Client
from drf_spectacular.validation import validate_schema

from incidents import ingestion
from incidents.api import integrations
from incidents.api.integration_schema import ERROR_CODES
from incidents.ingestion import MAX_JSON_DEPTH, parse_time
from tests.incidents.factories import SeverityFactory

pytestmark = pytest.mark.django_db

AM = "/api/v1/integrations/alertmanager/"
GRAFANA = "/api/v1/integrations/grafana/"
PD = "/api/v1/integrations/pagerduty/v2/enqueue"
WEBHOOK_CODES = {"200", "400", "401", "403", "405", "413", "429", "5XX"}
PAGERDUTY_CODES = {"202", "400", "405", "429", "5XX"}


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def keys(db):
    for level in (1, 2, 3, 4):
        SeverityFactory(level=level)
    ingestion.integration_cache_clear()
    keys = {kind: ingestion.integration_create(kind=kind, name=kind)[1] for kind in ("alertmanager", "grafana")}
    keys["pagerduty"] = ingestion.integration_create(kind="pagerduty", name="pagerduty")[1]
    disabled, keys["disabled"] = ingestion.integration_create(kind="alertmanager", name="disabled")
    disabled.is_active = False
    disabled.save()
    yield keys
    ingestion.integration_cache_clear()


# ---- the served schema ----------------------------------------------------------------------------


def test_the_schema_is_valid_openapi_and_keeps_the_default_hook_first(schema):
    validate_schema(schema)
    assert settings.SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] == [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "incidents.api.integration_schema.add_integration_endpoints",
    ]
    assert "IncidentStatusEnum" in schema["components"]["schemas"]  # the enum hook still runs


def test_the_schema_documents_the_three_ingestion_endpoints(schema):
    paths = schema["paths"]
    for path in (AM, GRAFANA, PD):
        assert list(paths[path]) == ["post"], path
        operation = paths[path]["post"]
        assert operation["tags"] == ["integrations"]
        assert "Set up" in operation["description"] and "create_integration" in operation["description"]
        assert operation["requestBody"]["required"] is True
        assert "schema" in operation["requestBody"]["content"]["application/json"]

    schemes = schema["components"]["securitySchemes"]
    assert schemes["IntegrationKey"]["type"] == "http" and schemes["IntegrationKey"]["scheme"] == "bearer"
    assert "integration key" in schemes["IntegrationKey"]["description"]
    assert "ApiKey" in schemes  # a scheme of its own: an API key is refused there
    assert paths[AM]["post"]["security"] == [{"IntegrationKey": []}]
    assert paths[GRAFANA]["post"]["security"] == [{"IntegrationKey": []}]
    assert paths[PD]["post"]["security"] == []  # the routing_key in the body is the credential
    assert {p["name"] for p in paths[GRAFANA]["post"]["parameters"]} == {
        "X-Grafana-Alerting-Signature",
        "X-Grafana-Alerting-Timestamp",
    }

    assert set(paths[AM]["post"]["responses"]) == WEBHOOK_CODES
    assert set(paths[GRAFANA]["post"]["responses"]) == WEBHOOK_CODES
    assert set(paths[PD]["post"]["responses"]) == PAGERDUTY_CODES
    assert "WWW-Authenticate" in paths[AM]["post"]["responses"]["401"]["headers"]
    assert "Allow" in paths[PD]["post"]["responses"]["405"]["headers"]

    tag = next(t for t in schema["tags"] if t["name"] == "integrations")
    assert "integration" in tag["description"]
    bodies = schema["components"]["schemas"]
    assert bodies["PagerDutyEvent"]["properties"]["event_action"]["enum"] == ["trigger", "acknowledge", "resolve"]
    assert bodies["PagerDutyEvent"]["properties"]["payload"]["properties"]["severity"]["enum"] == [
        "critical",
        "error",
        "warning",
        "info",
    ]
    alert = bodies["AlertmanagerAlert"]["properties"]
    assert {"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint", "generatorURL"} <= set(alert)
    assert bodies["AlertmanagerWebhook"]["additionalProperties"] is True
    assert {"orgId", "title", "state", "message"} <= set(bodies["GrafanaWebhook"]["properties"])
    assert "values" in bodies["GrafanaAlert"]["properties"]


def test_the_other_operations_are_unchanged(schema):
    incidents = schema["paths"]["/api/v1/incidents/"]["post"]
    assert incidents["security"] == [{"ApiKey": []}, {"cookieAuth": []}]
    assert incidents["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


# ---- every documented answer, for real ------------------------------------------------------------


def _resolve(node, components):
    """The response schema as plain JSON Schema: $refs inlined, OpenAPI 3.0's nullable made a type."""
    if isinstance(node, list):
        return [_resolve(n, components) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _resolve(components[node["$ref"].rsplit("/", 1)[1]], components)
    node = {k: _resolve(v, components) for k, v in node.items() if k not in ("example", "description")}
    if node.pop("nullable", False):
        node["type"] = [node["type"], "null"]
    return node


def _post(path, body, key=None, **headers):
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    return Client().post(path, body, content_type="application/json", **headers)


ALERT = {
    "status": "firing",
    "labels": {"alertname": "Down", "severity": "critical"},
    "startsAt": "2024-03-01T02:09:00Z",
}
WEBHOOK = {"version": "4", "groupKey": '{}:{alertname="Down"}', "alerts": [ALERT]}
EVENT = {
    "event_action": "trigger",
    "dedup_key": "db/1",
    "payload": {"summary": "DB down", "source": "db1", "severity": "error"},
}


def _webhook_answers(path, kind, keys, monkeypatch):
    other = "grafana" if kind == "alertmanager" else "alertmanager"
    yield "200", _post(path, WEBHOOK, keys[kind])
    yield "200", _post(path, WEBHOOK, keys[kind])  # a repeat: accepted, nothing changes
    yield "400", _post(path, b"{not json", keys[kind])
    yield "400", _post(path, {"groupKey": "g", "alerts": [{"labels": "x"}]}, keys[kind])
    yield "400", _post(path, b"\xff\xfe", keys[kind])
    yield "401", _post(path, WEBHOOK)
    yield "401", _post(path, WEBHOOK, "0" * 32)
    yield "403", _post(path, WEBHOOK, keys[other])
    yield "403", _post(path, WEBHOOK, keys["disabled"])  # Grafana: another kind's too
    yield "405", Client().get(path, HTTP_AUTHORIZATION=f"Bearer {keys[kind]}")
    monkeypatch.setattr(integrations, "MAX_BODY_BYTES", 1024)
    yield "413", _post(path, {**WEBHOOK, "padding": "x" * 2000}, keys[kind])
    monkeypatch.setattr(settings, "INGEST_UNAUTHENTICATED_PER_MINUTE", 2)  # two 401s above
    yield "429", _post(path, WEBHOOK, "0" * 32)


@pytest.mark.parametrize(("path", "kind"), [(AM, "alertmanager"), (GRAFANA, "grafana")])
def test_every_answer_of_the_webhooks_is_the_documented_one(schema, keys, monkeypatch, path, kind):
    operation = schema["paths"][path]["post"]
    seen = set()
    for code, response in _webhook_answers(path, kind, keys, monkeypatch):
        assert response.status_code == int(code), response.content
        documented = operation["responses"][code]
        body_schema = _resolve(documented["content"]["application/json"]["schema"], schema["components"]["schemas"])
        jsonschema.validate(response.json(), body_schema)
        if code != "200":
            assert response.json()["error"]["code"] == ERROR_CODES[code]
        for header, spec in documented.get("headers", {}).items():
            assert response[header] in spec["schema"].get("enum", [response[header]]), header
        seen.add(code)
    assert seen == WEBHOOK_CODES - {"5XX"}


def test_every_answer_of_the_pagerduty_endpoint_is_the_documented_one(schema, keys, monkeypatch):
    operation = schema["paths"][PD]["post"]
    components = schema["components"]["schemas"]
    answers = [
        ("202", _post(PD, {**EVENT, "routing_key": keys["pagerduty"]})),
        ("202", _post(PD, {"event_action": "resolve", "dedup_key": "never", "routing_key": keys["pagerduty"]})),
        ("400", _post(PD, {**EVENT, "event_action": "explode", "routing_key": keys["pagerduty"]})),
        ("400", _post(PD, EVENT)),  # no routing_key
        ("400", _post(PD, {**EVENT, "routing_key": keys["alertmanager"]})),
        ("400", _post(PD, b"[1, 2")),
        ("400", _post(PD, {**EVENT, "routing_key": keys["pagerduty"], "padding": "x" * (600 * 1024)})),
        ("405", Client().get(PD)),
    ]
    monkeypatch.setattr(settings, "INGEST_UNAUTHENTICATED_PER_MINUTE", 1)  # one missing routing key above
    answers.append(("429", _post(PD, EVENT)))
    for code, response in answers:
        assert response.status_code == int(code), response.content
        documented = operation["responses"][code]
        jsonschema.validate(response.json(), _resolve(documented["content"]["application/json"]["schema"], components))
        for header, spec in documented.get("headers", {}).items():
            assert response[header] in spec["schema"].get("enum", [response[header]]), header
    assert {code for code, _ in answers} == PAGERDUTY_CODES - {"5XX"}
    assert answers[0][1].json() == {"status": "success", "message": "Event processed", "dedup_key": "db/1"}


# ---- bodies that were answered with a 500 ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-05:00",  # past year 9999 in UTC
        "2024-01-01T00:00:00+99:00",  # an offset of a day or more
    ],
)
def test_a_time_python_cannot_hold_is_the_senders_error(value):
    with pytest.raises(ingestion.PayloadInvalid):
        parse_time(value, "startsAt")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (AM, {**WEBHOOK, "alerts": [{**ALERT, "startsAt": "9999-12-31T23:59:59-05:00"}]}),
        (AM, {**WEBHOOK, "alerts": [{**ALERT, "startsAt": "2024-01-01T00:00:00+24:00"}]}),
        (GRAFANA, json.dumps({**WEBHOOK, "alerts": [{**ALERT, "values": {"A": 1}}]}).replace('"A": 1', '"A": 1e400')),
        (GRAFANA, json.dumps({**WEBHOOK, "alerts": [{**ALERT, "values": "X"}]}).replace('"X"', "[" * 910 + "]" * 910)),
        (
            AM,
            json.dumps({**WEBHOOK, "alerts": [{**ALERT, "generatorURL": "X"}]}).replace(
                '"X"', '{"a":' * 200 + "1" + "}" * 200
            ),
        ),
    ],
    ids=["time-overflow", "offset-24h", "number-1e400", "nested-910", "nested-200"],
)
def test_webhook_bodies_that_were_a_500_are_a_400(keys, path, body):
    response = _post(path, body, keys["alertmanager" if path == AM else "grafana"])
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_payload"


@pytest.mark.parametrize(
    "event",
    [
        {**EVENT, "payload": {**EVENT["payload"], "timestamp": "9999-12-31T23:59:59-05:00"}},
        {**EVENT, "payload": {**EVENT["payload"], "custom_details": {"free": "X"}}},
        {**EVENT, "links": [{"href": "X"}]},
    ],
    ids=["time-overflow", "custom-details-1e400", "links-1e400"],
)
def test_pagerduty_events_that_were_a_500_are_a_400(keys, event):
    body = json.dumps({**event, "routing_key": keys["pagerduty"]}).replace('"X"', "-1e400")
    response = _post(PD, body)
    assert response.status_code == 400, response.content
    assert response.json()["status"] == "invalid event"


def test_nesting_up_to_the_limit_is_accepted(keys):
    depth = MAX_JSON_DEPTH - 3  # the body, alerts and the alert are three levels
    body = json.dumps({**WEBHOOK, "alerts": [{**ALERT, "values": "X"}]}).replace('"X"', "[" * depth + "]" * depth)
    assert _post(GRAFANA, body, keys["grafana"]).status_code == 200
    deeper = body.replace("[[", "[[[", 1).replace("]]", "]]]", 1)
    assert _post(GRAFANA, deeper, keys["grafana"]).status_code == 400


def _signed(secret, body, timestamp):
    return hmac.new(secret.encode(), f"{timestamp}:".encode() + body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("signature", "timestamp", "status"),
    [
        ("é" * 64, None, 401),  # a Latin-1 header: compare_digest refused the str with a TypeError
        (None, "²", 200),  # not digits to int(): no age to check, as for any other non-number
        (None, "9" * 400, 401),  # too long for a float: a time far away, not an OverflowError
        (None, "now", 200),
    ],
)
def test_grafana_signature_headers_that_were_a_500(db, keys, signature, timestamp, status):
    _integration, key = ingestion.integration_create(kind="grafana", name="signed", signing_secret="s3cret")
    body = json.dumps(WEBHOOK).encode()
    if timestamp == "now":
        timestamp = str(int(time.time()))
    headers = {}
    if timestamp is not None:
        headers["HTTP_X_GRAFANA_ALERTING_TIMESTAMP"] = timestamp
    # WSGI headers are Latin-1: the test client sends str as is; a server decodes raw bytes the same way.
    headers["HTTP_X_GRAFANA_ALERTING_SIGNATURE"] = signature or _signed("s3cret", body, timestamp)
    response = _post(GRAFANA, body, key, **headers)
    assert response.status_code == status, response.content
