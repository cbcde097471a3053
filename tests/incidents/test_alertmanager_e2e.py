"""A real sender: Debian's prometheus-alertmanager posting to the live test server.

Alertmanager runs on loopback with a webhook receiver (bearer key) pointed at the Alertmanager
endpoint and a pagerduty_configs receiver whose `url` is the PagerDuty-compatible endpoint. Alerts
are injected through its API (POST /api/v2/alerts); the incidents must open, then follow when the
same alerts are posted again with an end in the past.

Transactional (the live server commits), so pytest-django runs it after the ordinary database
tests; it takes about ten seconds. Skipped only when the binary is not installed.
"""

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from incidents import ingestion
from incidents.models import Alert, AlertGroup, AlertPayload, Incident, TimelineEvent
from tests.incidents.factories import SeverityFactory

ALERTMANAGER = shutil.which("prometheus-alertmanager")

pytestmark = [
    pytest.mark.skipif(
        ALERTMANAGER is None,
        reason="prometheus-alertmanager is not installed (Debian: apt-get install -y prometheus-alertmanager)",
    ),
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

TIMEOUT = 60  # seconds to wait for each step; it normally takes two or three
WEBHOOK_ALERT = {"alertname": "IngestE2E", "target": "webhook", "severity": "critical"}
PAGERDUTY_ALERT = {"alertname": "IngestPD", "target": "pagerduty", "severity": "warning"}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def one_at_a_time(monkeypatch):
    """On SQLite the live server shares the test's in-memory connection: take turns using it."""
    if connection.vendor != "sqlite":
        return nullcontext
    lock = threading.RLock()
    receive = ingestion.post_receive

    def post_receive(**kwargs):
        with lock:
            return receive(**kwargs)

    monkeypatch.setattr(ingestion, "post_receive", post_receive)
    return lambda: lock


@pytest.fixture
def integrations(db):
    for level in (1, 2, 3, 4):
        SeverityFactory(level=level)
    webhook, webhook_key = ingestion.integration_create(kind="alertmanager", name="Alertmanager e2e")
    pagerduty, pagerduty_key = ingestion.integration_create(
        kind="pagerduty", name="PagerDuty-compatible e2e", resolve_to="mitigated"
    )
    webhook.key, pagerduty.key = webhook_key, pagerduty_key
    return webhook, pagerduty


@pytest.fixture
def alertmanager(live_server, integrations, tmp_path):
    webhook, pagerduty = integrations
    base = live_server.url.replace("localhost", "127.0.0.1")
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"resolve_timeout": "5s"},
                "route": {
                    "receiver": "webhook",
                    "group_by": ["alertname"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                    "routes": [{"receiver": "pagerduty", "matchers": ['target="pagerduty"']}],
                },
                "receivers": [
                    {
                        "name": "webhook",
                        "webhook_configs": [
                            {
                                "url": f"{base}/api/v1/integrations/alertmanager/",
                                "http_config": {"authorization": {"type": "Bearer", "credentials": webhook.key}},
                            }
                        ],
                    },
                    {
                        "name": "pagerduty",
                        "pagerduty_configs": [
                            {
                                "routing_key": pagerduty.key,
                                "url": f"{base}/api/v1/integrations/pagerduty/v2/enqueue",
                            }
                        ],
                    },
                ],
            }
        )
    )
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Alertmanager did not start:\n{(tmp_path / 'alertmanager.log').read_text()}")
            time.sleep(0.2)
        process.log_path = tmp_path / "alertmanager.log"
        process.url = url
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def inject(alertmanager, *alerts, starts_at, ends_at=None):
    """Post alerts the way Prometheus does: every re-send of one episode carries its startsAt.

    (Without startsAt, Alertmanager dates an alert that has already ended at its end: a resolved
    episode of its own, older than the firing one, which the product rightly treats as stale.)
    """
    iso = "%Y-%m-%dT%H:%M:%S.%fZ"
    body = [
        {
            "labels": labels,
            "annotations": {"summary": f"{labels['alertname']} from the end-to-end test"},
            "startsAt": starts_at.strftime(iso),
            **({"endsAt": ends_at.strftime(iso)} if ends_at else {}),
        }
        for labels in alerts
    ]
    request = urllib.request.Request(
        f"{alertmanager.url}/api/v2/alerts",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def wait_for(what, check, alertmanager, lock):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with lock():
            result = check()
        if result:
            return result
        time.sleep(0.25)
    with lock():
        payloads = list(AlertPayload.objects.values_list("kind", "status", "error", "body"))
        incidents = [
            (i.reference, i.status, list(i.timeline.values_list("kind", "body")))
            for i in Incident.objects.order_by("pk")
        ]
    pytest.fail(
        f"Timed out waiting for {what}. Posts received: {payloads}\nIncidents: {incidents}\n"
        f"Alertmanager log:\n{alertmanager.log_path.read_text()[-3000:]}"
    )


def incident_of(integration):
    group = AlertGroup.objects.filter(integration=integration).select_related("incident").first()
    return group.incident if group is not None else None


def test_alertmanager_opens_and_resolves_incidents(alertmanager, integrations, one_at_a_time):
    webhook, pagerduty = integrations
    started = datetime.now(UTC) - timedelta(minutes=1)
    inject(alertmanager, WEBHOOK_ALERT, PAGERDUTY_ALERT, starts_at=started)

    def both_open():
        pair = incident_of(webhook), incident_of(pagerduty)
        return pair if all(pair) else None

    from_webhook, from_pagerduty = wait_for("both incidents to open", both_open, alertmanager, one_at_a_time)
    with one_at_a_time():
        assert (from_webhook.status, from_webhook.severity.level) == ("detected", 1)
        assert from_webhook.title == "IngestE2E from the end-to-end test"  # the summary names the alert
        tracked = Alert.objects.get(group__integration=webhook)
        assert tracked.labels == WEBHOOK_ALERT
        assert tracked.fingerprint == ingestion.label_fingerprint(WEBHOOK_ALERT)  # the sender's own value
        assert tracked.starts_at == started
        assert from_webhook.started_at == started  # impact began when the alert did
        first = AlertPayload.objects.filter(integration=webhook).earliest("received_at")
        assert first.headers["User-Agent"].startswith("Alertmanager/")
        assert json.loads(first.body)["version"] == "4"

        # Alertmanager's PagerDuty notifier: its default severity is "error", its summary the title.
        assert (from_pagerduty.status, from_pagerduty.severity.level) == ("detected", 2)
        assert from_pagerduty.title == "[FIRING:1] IngestPD (warning pagerduty)"

    ended = datetime.now(UTC) - timedelta(seconds=1)  # in the past: Alertmanager sends the resolution
    inject(alertmanager, WEBHOOK_ALERT, PAGERDUTY_ALERT, starts_at=started, ends_at=ended)

    def both_followed():
        pair = incident_of(webhook), incident_of(pagerduty)
        return pair if (pair[0].status, pair[1].status) == ("resolved", "mitigated") else None

    resolved, mitigated = wait_for("both incidents to follow", both_followed, alertmanager, one_at_a_time)
    with one_at_a_time():
        assert Incident.objects.count() == 2  # no duplicates from re-sends
        last = TimelineEvent.objects.filter(incident=resolved, kind="alert").last()
        assert last.data["event"] == "all_resolved"
        assert last.data["alerts"][0]["labels"] == WEBHOOK_ALERT and last.data["alerts"][0]["ends_at"]
        assert mitigated.mitigated_at is not None and mitigated.resolved_at is None
        assert Alert.objects.get(group__integration=webhook).ends_at == ended
        assert set(AlertPayload.objects.values_list("status", flat=True)) == {"accepted"}
