"""The alert ingestion endpoints in the OpenAPI schema.

Those endpoints are plain Django views (incidents.api.integrations), which drf-spectacular does not
see, so a postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]) adds them: the
senders' request bodies, the integration key as a security scheme of its own, and every answer the
views give, with its exact body. Keep this in step with incidents.api.integrations and
incidents.ingestion; tests/incidents/test_integration_schema.py and the schemathesis run in
tests/incidents/test_api_schema.py check that it is.
"""

from copy import deepcopy

from incidents import ingestion

from . import integrations

TAG = "integrations"
SECURITY_SCHEME = "IntegrationKey"
PREFIX = "/api/v1/integrations"
PATHS = {
    "alertmanager": f"{PREFIX}/alertmanager/",
    "grafana": f"{PREFIX}/grafana/",
    "pagerduty": f"{PREFIX}/pagerduty/v2/enqueue",
}

CREATE_INTEGRATION = (
    "Create an integration of this kind in the admin (*Incidents › Integrations › Add*) or with "
    "`manage.py create_integration {kind} NAME [--service SLUG …]`. Its key is shown once, when it is "
    "created or rotated: only a prefix and a hash are stored."
)


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _string_map(description):
    return {"type": "object", "additionalProperties": {"type": "string"}, "description": description}


TIME = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339, any number of fraction digits, any offset. Go's zero time "
    "(`0001-01-01T00:00:00Z`) means unset.",
}

# ---- request bodies -------------------------------------------------------------------------------


def _webhook_alert(extra=None):
    properties = {
        "status": {
            "type": "string",
            "enum": ["firing", "resolved"],
            "description": "Compared case-insensitively. When absent: resolved if `endsAt` is past, else firing.",
        },
        "labels": _string_map(
            "Identify the alert (with `startsAt`, one firing episode). `severity` sets the incident's "
            "severity: critical/page/p1… → 1, error/high/p2… → 2, warning/p3… → 3, info/low/p4… → 4, "
            "anything else 3, plus the integration's overrides. Non-string values are kept as JSON text."
        ),
        "annotations": _string_map(
            "`summary` (or `message`) names the alert; `description` goes into the incident's summary."
        ),
        "startsAt": {**TIME, "description": "When the episode began. " + TIME["description"]},
        "endsAt": {**TIME, "description": "When it ended (resolved alerts). " + TIME["description"]},
        "generatorURL": {"type": "string", "description": "Link back to the source; kept with the alert."},
        "fingerprint": {
            "type": "string",
            "description": "Identifies the alert's label set; computed from `labels` as Prometheus does when absent.",
        },
        **(extra or {}),
    }
    return {
        "type": "object",
        "description": "One alert. Fields not listed here are accepted and kept with the post.",
        "properties": properties,
        "required": ["labels"],
        "additionalProperties": True,
    }


def _webhook(description, alert_schema, version, extra=None):
    return {
        "type": "object",
        "description": description,
        "properties": {
            "version": {"type": "string", "description": f"The message format's version (`{version}`)."},
            "groupKey": {
                "type": "string",
                "minLength": 1,
                "description": "Identifies the alert group: each group has at most one open incident. When "
                "absent, derived from `groupLabels` as Alertmanager would.",
            },
            "truncatedAlerts": {
                "type": "integer",
                "minimum": 0,
                "description": "How many alerts the sender left out (`max_alerts`). When above 0 the post is "
                "partial: alerts it does not mention are not taken as resolved.",
            },
            "status": {
                "type": "string",
                "enum": ["firing", "resolved"],
                "description": "The group's status; each alert's own `status` is what counts.",
            },
            "receiver": {"type": "string", "description": "The receiver (contact point) that sent this."},
            "groupLabels": _string_map("The labels the alerts are grouped by."),
            "commonLabels": _string_map("Labels every alert has; `alertname` goes into the incident title."),
            "commonAnnotations": _string_map(
                "Annotations every alert has; `summary` goes into the incident title, `description` into its summary."
            ),
            "externalURL": {"type": "string", "description": "Link to the sender."},
            "alerts": {
                "type": "array",
                "items": alert_schema,
                "description": "Every alert of the group (firing and recently resolved). An alert is resolved "
                "only by a post that says so; one merely absent stays firing.",
            },
            **(extra or {}),
        },
        "required": ["groupKey", "alerts"],
        "additionalProperties": True,
    }


GRAFANA_ALERT_EXTRA = {
    "silenceURL": {"type": "string"},
    "dashboardURL": {"type": "string"},
    "panelURL": {"type": "string"},
    "imageURL": {"type": "string"},
    "values": {
        "type": "object",
        "additionalProperties": True,
        "description": "The values of the alert rule's queries and expressions.",
    },
    "valueString": {"type": "string"},
}

GRAFANA_EXTRA = {
    "orgId": {"type": "integer"},
    "title": {
        "type": "string",
        "description": "Used for the incident title (without its `[FIRING:n]` prefix) when nothing better is given.",
    },
    "state": {"type": "string", "description": "`alerting`, `ok`…"},
    "message": {"type": "string"},
}


def _pagerduty_event():
    severities = sorted(ingestion.PAGERDUTY_LEVELS, key=ingestion.PAGERDUTY_LEVELS.get)
    return {
        "type": "object",
        "description": "A PagerDuty Events API v2 event, unchanged. Fields not listed here are accepted.",
        "properties": {
            "routing_key": {
                "type": "string",
                "description": "The credential: the key of a PagerDuty integration (32 hex characters).",
            },
            "event_action": {"type": "string", "enum": list(ingestion.PAGERDUTY_ACTIONS)},
            "dedup_key": {
                "type": "string",
                "maxLength": 255,
                "description": "Identifies the alert, and its group. Required to acknowledge or resolve; "
                "generated for a trigger without one (and returned).",
            },
            "payload": {
                "type": "object",
                "description": "Required to trigger.",
                "properties": {
                    "summary": {"type": "string", "minLength": 1, "maxLength": 1024},
                    "source": {"type": "string", "minLength": 1},
                    "severity": {
                        "type": "string",
                        "enum": severities,
                        "description": f"{', '.join(f'{s} → {ingestion.PAGERDUTY_LEVELS[s]}' for s in severities)}; "
                        "the integration's overrides may add values.",
                    },
                    "timestamp": {**TIME, "description": "When the impact began."},
                    "component": {"type": "string"},
                    "group": {"type": "string"},
                    "class": {"type": "string"},
                    "custom_details": {
                        "type": "object",
                        "additionalProperties": True,
                        "description": "Shown in the incident's summary.",
                    },
                },
                "required": ["summary", "source", "severity"],
                "additionalProperties": True,
            },
            "client": {"type": "string"},
            "client_url": {"type": "string"},
            "links": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"href": {"type": "string"}, "text": {"type": "string"}},
                    "additionalProperties": True,
                },
            },
            "images": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"src": {"type": "string"}, "href": {"type": "string"}, "alt": {"type": "string"}},
                    "additionalProperties": True,
                },
            },
        },
        "required": ["routing_key", "event_action"],
        "additionalProperties": True,
    }


# ---- responses ------------------------------------------------------------------------------------

ERROR_CODES = {
    "400": "invalid_payload",
    "401": "not_authenticated",
    "403": "permission_denied",
    "405": "method_not_allowed",
    "413": "payload_too_large",
    "429": "throttled",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait before posting again."}}
THROTTLED = (
    "Too many posts that failed authentication came from this address in the last minute (setting "
    "`INGEST_UNAUTHENTICATED_PER_MINUTE`): nothing was recorded. Posts with a valid key are never refused this way."
)

INTEGRATION_ERROR = {
    "type": "object",
    "description": "The API's error shape. `fields.body` lists what is wrong in the body, when that is the problem.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "enum": sorted(set(ERROR_CODES.values()))},
                "message": {"type": "string", "description": "For whoever set up the sender."},
                "fields": {
                    "type": "object",
                    "properties": {"body": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False,
                },
            },
            "required": ["code", "message", "fields"],
            "additionalProperties": False,
        }
    },
    "required": ["error"],
    "additionalProperties": False,
}

INTEGRATION_ACCEPTED = {
    "type": "object",
    "description": "The post was recorded and applied (a repeat that changes nothing is accepted too).",
    "properties": {
        "status": {"type": "string", "enum": ["accepted"]},
        "payload": {"type": "integer", "description": "The recorded post (admin: Alert payloads)."},
        "group": {"type": "integer", "description": "The alert group the post belongs to."},
        "incident": {"type": "integer", "nullable": True, "description": "The group's incident, if it has one."},
        "incident_created": {"type": "boolean", "description": "Whether this post opened the incident."},
        "alerts": {
            "type": "object",
            "description": "What the post changed, in alerts.",
            "properties": {
                name: {"type": "integer", "minimum": 0} for name in ("new", "resolved", "acknowledged", "unchanged")
            },
            "required": ["new", "resolved", "acknowledged", "unchanged"],
            "additionalProperties": False,
        },
    },
    "required": ["status", "payload", "group", "incident", "incident_created", "alerts"],
    "additionalProperties": False,
}

PAGERDUTY_ACCEPTED = {
    "type": "object",
    "description": "PagerDuty's own answer to an accepted event.",
    "properties": {
        "status": {"type": "string", "enum": ["success"]},
        "message": {"type": "string", "enum": ["Event processed"]},
        "dedup_key": {"type": "string", "description": "The event's dedup_key (generated if it had none)."},
    },
    "required": ["status", "message", "dedup_key"],
    "additionalProperties": False,
}

PAGERDUTY_INVALID = {
    "type": "object",
    "description": "PagerDuty's own answer to a refused event. `errors` says why, for whoever set up the sender.",
    "properties": {
        "status": {"type": "string", "enum": ["invalid event"]},
        "message": {"type": "string", "enum": ["Event object is invalid"]},
        "errors": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["status", "message", "errors"],
    "additionalProperties": False,
}

SCHEMAS = {
    "AlertmanagerAlert": _webhook_alert(),
    "GrafanaAlert": _webhook_alert(GRAFANA_ALERT_EXTRA),
    "PagerDutyEvent": None,  # built when the schema is, from incidents.ingestion
    "IntegrationAccepted": INTEGRATION_ACCEPTED,
    "IntegrationError": INTEGRATION_ERROR,
    "PagerDutyAccepted": PAGERDUTY_ACCEPTED,
    "PagerDutyInvalid": PAGERDUTY_INVALID,
}

ALLOW_POST = {"Allow": {"schema": {"type": "string", "enum": ["POST"]}, "description": "Only POST is accepted."}}
RETRY = {
    "description": "The database is unavailable or something failed: nothing was applied, and the post is kept "
    "(marked failed in the admin) when it could be. Alertmanager and Grafana retry on their own; the body "
    "is Django's error page, not JSON."
}


def _json(schema, example=None):
    content = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"application/json": content}


def _error(code, message, fields=None):
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _webhook_responses():
    limit = f"{integrations.MAX_BODY_BYTES // 1024} KB"
    error = _ref("IntegrationError")
    return {
        "200": {
            "description": "Accepted: the alerts were applied to their group and its incident.",
            "content": _json(
                _ref("IntegrationAccepted"),
                {
                    "status": "accepted",
                    "payload": 1042,
                    "group": 17,
                    "incident": 311,
                    "incident_created": True,
                    "alerts": {"new": 2, "resolved": 0, "acknowledged": 0, "unchanged": 0},
                },
            ),
        },
        "400": {
            "description": "`invalid_payload`: the body is not UTF-8 or not JSON, or not a webhook message; "
            "`fields.body` lists each problem. The post is recorded, marked rejected. The Content-Type is not checked.",
            "content": _json(
                error,
                _error(
                    "invalid_payload",
                    "The body is not a valid webhook message. alerts[0].labels is missing.",
                    {"body": ["alerts[0].labels is missing."]},
                ),
            ),
        },
        "401": {
            "description": "`not_authenticated`: no `Authorization: Bearer <integration key>`, or a key that "
            "matches no integration (an API key is not an integration key). Grafana: a signed integration's "
            "post without a valid `X-Grafana-Alerting-Signature`, or with a timestamp more than five minutes off.",
            "headers": {
                "WWW-Authenticate": {
                    "schema": {"type": "string", "enum": ['Bearer realm="integrations"']},
                    "description": "The expected scheme.",
                }
            },
            "content": _json(
                error,
                _error(
                    "not_authenticated",
                    "Authentication is missing: send the integration key as 'Authorization: Bearer <key>'.",
                ),
            ),
        },
        "403": {
            "description": "`permission_denied`: the key belongs to an integration of another kind (the message "
            "names the right endpoint), or the integration is disabled.",
            "content": _json(error, _error("permission_denied", "The integration “Alertmanager prod” is disabled.")),
        },
        "405": {
            "description": "`method_not_allowed`: any method but POST.",
            "headers": ALLOW_POST,
            "content": _json(error, _error("method_not_allowed", "Only POST is accepted here.")),
        },
        "413": {
            "description": f"`payload_too_large`: the body is over {limit} (setting `INGEST_MAX_BODY_BYTES`). "
            "Lower the sender's `max_alerts`.",
            "content": _json(error, _error("payload_too_large", f"The body is larger than {limit}.")),
        },
        "429": {
            "description": f"`throttled`: {THROTTLED}",
            "headers": RETRY_AFTER,
            "content": _json(
                error, _error("throttled", "Too many posts that failed authentication from this address.")
            ),
        },
        "5XX": RETRY,
    }


def _pagerduty_responses():
    limit = f"{integrations.PAGERDUTY_MAX_BODY_BYTES // 1024} KB"
    invalid = _ref("PagerDutyInvalid")
    return {
        "202": {
            "description": "Accepted (as PagerDuty answers). Acknowledging or resolving what is not open is "
            "accepted and dropped.",
            "content": _json(
                _ref("PagerDutyAccepted"),
                {"status": "success", "message": "Event processed", "dedup_key": "srv01/HTTP"},
            ),
        },
        "400": {
            "description": "Refused, in PagerDuty's shape, whatever the reason: the body is not JSON or not a "
            f"valid event, it is over {limit} (PagerDuty's limit), or `routing_key` is missing, matches no "
            "integration, belongs to another kind of integration or to a disabled one. The post is recorded, "
            "marked rejected.",
            "content": _json(
                invalid,
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["routing_key does not match any integration."],
                },
            ),
        },
        "405": {
            "description": "Any method but POST, in PagerDuty's shape.",
            "headers": ALLOW_POST,
            "content": _json(
                invalid,
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["Only POST is accepted here."],
                },
            ),
        },
        "429": {
            "description": f"In PagerDuty's shape: {THROTTLED}",
            "headers": RETRY_AFTER,
            "content": _json(
                invalid,
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["Too many posts that failed authentication from this address: try again in a minute."],
                },
            ),
        },
        "5XX": RETRY,
    }


ALERTMANAGER_EXAMPLE = {
    "version": "4",
    "groupKey": '{}:{alertname="HighErrorRate"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "incidents",
    "groupLabels": {"alertname": "HighErrorRate"},
    "commonLabels": {"alertname": "HighErrorRate", "service": "checkout", "severity": "critical"},
    "commonAnnotations": {"summary": "Checkout is failing requests"},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "service": "checkout", "severity": "critical"},
            "annotations": {"summary": "Checkout is failing requests", "description": "5xx ratio above 5% for 5m"},
            "startsAt": "2024-03-01T02:09:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
            "fingerprint": "a1bc48475b20e73d",
        }
    ],
}

GRAFANA_EXAMPLE = {
    **ALERTMANAGER_EXAMPLE,
    "version": "1",
    "receiver": "Incidents",
    "externalURL": "https://grafana.example.com/",
    "orgId": 1,
    "title": "[FIRING:1] HighErrorRate checkout",
    "state": "alerting",
    "message": "**Firing** …",
    "alerts": [
        {
            **ALERTMANAGER_EXAMPLE["alerts"][0],
            "dashboardURL": "https://grafana.example.com/d/abc",
            "values": {"A": 0.071},
            "valueString": "[ var='A' labels={service=checkout} value=0.071 ]",
        }
    ],
}

PAGERDUTY_EXAMPLE = {
    "routing_key": "0123456789abcdef0123456789abcdef",
    "event_action": "trigger",
    "dedup_key": "srv01/HTTP",
    "payload": {
        "summary": "DISK at 99% on machine prod-datapipe03.example.com",
        "source": "prod-datapipe03.example.com",
        "severity": "critical",
        "component": "mysql",
        "custom_details": {"free space": "1%"},
    },
}

ALERTMANAGER_SETUP = """Prometheus Alertmanager's webhook receiver. Each post is one alert group: the
group opens one incident, its alerts are tracked on it, and when every alert has resolved the incident
moves to Resolved (or Mitigated: the integration's *resolve to*).

**Set up.** {create} Then in `alertmanager.yml`:

```yaml
receivers:
  - name: incidents
    webhook_configs:
      - url: https://<this host>/api/v1/integrations/alertmanager/
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: <integration key>   # or credentials_file
```

The trailing slash is optional. Answers are synchronous: a 5xx makes Alertmanager retry."""

GRAFANA_SETUP = """Grafana alerting's webhook contact point: the Alertmanager body plus Grafana's fields.

**Set up.** {create} In Grafana, add a contact point of type *Webhook*: URL
`https://<this host>/api/v1/integrations/grafana/`, method POST, *Authorization header* scheme
`Bearer` and the integration key as credentials. To have posts signed too, set the same secret as the
*HMAC signature* secret of the contact point and as the integration's signing secret (admin, or
`create_integration grafana NAME --signing-secret SECRET`): every post must then carry a valid
`X-Grafana-Alerting-Signature` (and, if you set a timestamp header, `X-Grafana-Alerting-Timestamp`)."""

PAGERDUTY_SETUP = """PagerDuty Events API v2, request and response bodies as PagerDuty's own, for any
tool that can send to PagerDuty. No `Authorization` header: the `routing_key` in the body is the
credential. Each `dedup_key` is one alert group: trigger opens its incident, acknowledge is recorded
on the timeline (it is not a person's acknowledgement) and resolve moves the incident to Resolved (or
Mitigated: the integration's *resolve to*).

**Set up.** {create} In the sending tool, use the integration key as the PagerDuty integration (routing)
key, and `https://<this host>/api/v1/integrations/pagerduty/v2/enqueue` as the events URL, in place of
`https://events.pagerduty.com/v2/enqueue`."""

TAG_DESCRIPTION = (
    "Where monitoring tools post alerts, in their own formats: Prometheus Alertmanager, Grafana and the "
    "PagerDuty Events API v2. These endpoints authenticate with an integration's key, not an API key: create "
    "the integration in the admin (*Incidents › Integrations*) or with `manage.py create_integration`. Posts are "
    "recorded as received (admin: *Alert payloads*), accepted or not, and can be replayed from there."
)


def _operation(operation_id, summary, description, body_schema, example, responses, security, parameters=()):
    operation = {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "tags": [TAG],
        "requestBody": {"required": True, "content": _json(body_schema, example)},
        "security": security,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = list(parameters)
    return operation


GRAFANA_HEADERS = [
    {
        "in": "header",
        "name": ingestion.GRAFANA_SIGNATURE_HEADER,
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
        "description": "Hex HMAC-SHA256 of the body (or of `<timestamp>:<body>` with the timestamp header) with "
        "the integration's signing secret. Required when the integration has one; ignored otherwise.",
    },
    {
        "in": "header",
        "name": ingestion.GRAFANA_TIMESTAMP_HEADER,
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]{1,13}$"},
        "description": "Unix time in seconds or milliseconds, signed with the body; must be within five minutes.",
    },
]


def integration_paths():
    """{path: {method: operation}} for the three ingestion endpoints."""
    bearer = [{SECURITY_SCHEME: []}]
    return {
        PATHS["alertmanager"]: {
            "post": _operation(
                "integrations_alertmanager",
                "Receive an Alertmanager webhook",
                ALERTMANAGER_SETUP.format(create=CREATE_INTEGRATION.format(kind="alertmanager")),
                _ref("AlertmanagerWebhook"),
                ALERTMANAGER_EXAMPLE,
                _webhook_responses(),
                bearer,
            )
        },
        PATHS["grafana"]: {
            "post": _operation(
                "integrations_grafana",
                "Receive a Grafana webhook",
                GRAFANA_SETUP.format(create=CREATE_INTEGRATION.format(kind="grafana")),
                _ref("GrafanaWebhook"),
                GRAFANA_EXAMPLE,
                _webhook_responses(),
                bearer,
                GRAFANA_HEADERS,
            )
        },
        PATHS["pagerduty"]: {
            "post": _operation(
                "integrations_pagerduty_enqueue",
                "Receive a PagerDuty Events API v2 event",
                PAGERDUTY_SETUP.format(create=CREATE_INTEGRATION.format(kind="pagerduty")),
                _ref("PagerDutyEvent"),
                PAGERDUTY_EXAMPLE,
                _pagerduty_responses(),
                [],  # no header credential: routing_key in the body is
            )
        },
    }


def integration_schemas():
    schemas = deepcopy(SCHEMAS)
    schemas["PagerDutyEvent"] = _pagerduty_event()
    schemas["AlertmanagerWebhook"] = _webhook(
        "An Alertmanager webhook message (version 4), unchanged. Fields not listed here are accepted and kept.",
        _ref("AlertmanagerAlert"),
        "4",
    )
    schemas["GrafanaWebhook"] = _webhook(
        "A Grafana webhook contact point message (version 1), unchanged. Fields not listed here are accepted and kept.",
        _ref("GrafanaAlert"),
        "1",
        GRAFANA_EXTRA,
    )
    return schemas


SECURITY_DEFINITION = {
    "type": "http",
    "scheme": "bearer",
    "description": "An integration key (Alertmanager and Grafana endpoints only; not an API key, which is refused "
    "there). Each integration has its own, shown once when it is created or rotated in the admin or with "
    "`manage.py create_integration KIND NAME`; it only lets its sender post alerts of that kind. PagerDuty events "
    "carry theirs as `routing_key` in the body instead.",
}


def add_integration_endpoints(result, generator, request, public):
    """POSTPROCESSING_HOOKS entry: add the ingestion endpoints, their schemas, security scheme and tag."""
    result.setdefault("paths", {}).update(integration_paths())
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).update(integration_schemas())
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = deepcopy(SECURITY_DEFINITION)

    # Name every tag in order of first use, so that adding a description to ours keeps the others' order.
    tags = {tag["name"]: tag for tag in result.get("tags", [])}
    for path in result["paths"].values():
        for operation in path.values():
            for name in operation.get("tags", []) if isinstance(operation, dict) else []:
                tags.setdefault(name, {"name": name})
    tags[TAG]["description"] = TAG_DESCRIPTION
    result["tags"] = list(tags.values())
    return result
