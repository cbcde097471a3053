"""A real Celery worker on Redis and PostgreSQL between our incident change and a Slack that answers
429 (Retry-After) and then 500: the change commits at once, and the worker delivers the announcement
later, waiting as long as Slack asked and then backing off.

Needs CELERY_BROKER_URL=redis://… and DATABASE_URL=postgres://… (the worker shares the test database);
skipped otherwise.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from comms.slack.models import SlackCall
from incidents.services import incident_transition
from incidents_site.celery import app
from tests.comms.slack.conftest import ANNOUNCE, SECRET
from tests.incidents.factories import SeverityFactory, UserFactory, declare

ROOT = Path(__file__).resolve().parents[3]
BROKER = os.environ.get("CELERY_BROKER_URL", "")

pytestmark = [
    pytest.mark.skipif(
        not BROKER.startswith(("redis://", "rediss://")),
        reason="needs a real broker: set CELERY_BROKER_URL=redis://… (CI does); the filesystem broker is not one",
    ),
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def _database_url():
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _start_worker(fake):
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": BROKER,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake.url,
        "SLACK_ANNOUNCE_CHANNEL": ANNOUNCE,
        "SLACK_RETRY_BASE_SECONDS": "1",
        "DJANGO_SETTINGS_MODULE": "incidents_site.settings",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "incidents_site",
            "worker",
            "--pool=solo",
            "-l",
            "WARNING",
            "-n",
            f"slack-{os.getpid()}@%h",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(worker):
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_429_then_500_from_slack_the_change_commits_at_once_and_the_worker_posts_later(settings, fake_slack):
    settings.SLACK_BOT_TOKEN, settings.SLACK_SIGNING_SECRET = "xoxb-test-token", SECRET
    settings.SLACK_API_URL, settings.SLACK_ANNOUNCE_CHANNEL = fake_slack.url, ANNOUNCE
    severity = SeverityFactory(level=1)
    severity.slack_channel, severity.slack_announce = False, True
    severity.save()
    rita = UserFactory(username="rita", groups=["Responders"])
    incident = declare("Checkout errors", severity=severity, actor=None)
    SlackCall.objects.all().delete()  # the declaration's announcement: not what this test is about
    fake_slack.script["chat.postMessage"] = [
        (429, {"Retry-After": "2"}, {"ok": False, "error": "ratelimited"}),
        (500, {}, b"upstream connect error"),
    ]
    app.control.purge()
    worker = _start_worker(fake_slack)
    try:
        _wait_for(lambda: app.control.ping(timeout=0.5), 60, "the worker")
        started = time.monotonic()
        incident = incident_transition(incident=incident, to="responding", actor=rita)
        took = time.monotonic() - started
        incident.refresh_from_db()
        assert incident.status == "responding" and took < 2  # never waited for Slack
        _wait_for(lambda: SlackCall.objects.filter(kind="announce", state="done").exists(), 60, "the announcement")
    finally:
        _stop(worker)
        app.control.purge()
    posts = [call for call in fake_slack.calls if call.method == "chat.postMessage"]
    assert len(posts) == 3 and all(post.args["channel"] == ANNOUNCE for post in posts)
    assert "is now *responding* by rita" in posts[-1].args["text"]
    assert posts[1].at - posts[0].at >= 2 - 0.1  # Slack's Retry-After
    assert posts[2].at - posts[1].at >= 4 - 0.1  # then backoff: 4 × SLACK_RETRY_BASE_SECONDS after the second failure
    call = SlackCall.objects.get(kind="announce")
    assert (call.state, call.attempts, call.last_error) == ("done", 3, "")
