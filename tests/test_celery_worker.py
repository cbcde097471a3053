"""The worker that `make run` and production start comes up on the configured broker and answers."""

import os
import subprocess
import sys
import time
from pathlib import Path

from incidents_site.celery import app

ROOT = Path(__file__).resolve().parent.parent


def test_worker_starts_on_the_configured_broker_and_answers_ping():
    worker = subprocess.Popen(
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
            f"ping-test-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,  # nobody reads a pipe: a chatty worker must not block on it
    )
    try:
        replies = []
        deadline = time.monotonic() + 60
        while not replies and time.monotonic() < deadline and worker.poll() is None:
            replies = app.control.ping(timeout=1.0) or []
        assert replies, f"no worker answered on {app.conf.broker_url!r}"
        assert any(f"ping-test-{os.getpid()}@" in name for reply in replies for name in reply)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
