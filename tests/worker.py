"""Real Celery workers for the tests that need one (one start/stop helper for all of them).

A worker is another process: it runs on the configured broker and, with `database=True`, on the test
database (PostgreSQL: the rows a transactional test commits are what it sees). Each gets a name ending
in this test process's id, so only its own replies count when waiting for it, and its own process
group, so a crash (SIGKILL) reaches its pool's children too. stdout and stderr go nowhere: nobody
reads a pipe, and a chatty worker must not block on one.
"""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

from incidents_site.celery import app

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 90  # seconds for workers to answer a ping (a loaded CI machine is slow)


def worker_database_url():
    """The test database's URL, for a worker process (user and password quoted)."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(*, database=True, **extra):
    """The environment of a worker: this one, the test's broker, its database when asked, then `extra`."""
    env = {**os.environ, "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "CELERY_TASK_ALWAYS_EAGER": "false"}
    if database:
        env["DATABASE_URL"] = worker_database_url()  # the test database, not the one in the environment
    env.update({key: str(value) for key, value in extra.items()})
    return env


def worker_name(name):
    return f"{name}-{os.getpid()}"


def worker_start(name, *, env=None, pool="solo", concurrency=None, quiet=True):
    """Start a worker named `name-<pid>@host`; returns its Popen (see workers_wait)."""
    command = [sys.executable, "-m", "celery", "-A", "incidents_site", "worker", f"--pool={pool}", "-l", "WARNING",
               "-n", f"{worker_name(name)}@%h"]  # fmt: skip
    if concurrency:
        command.append(f"--concurrency={concurrency}")
    if quiet:  # no gossip, mingle or heartbeats between the test's workers: faster to start and stop
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env if env is not None else worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: a crash kills the pool's children too
    )


def workers_wait(*names, timeout=START_TIMEOUT, processes=()):
    """Wait until the workers of these names answer a ping; AssertionError when they do not in time."""
    wanted = {worker_name(name) for name in names}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        replies = app.control.ping(timeout=1.0) or []
        answered = {n for n in wanted for reply in replies for full in reply if full.startswith(n + "@")}
        if answered == wanted:
            return
    raise AssertionError(f"the workers {sorted(wanted)} did not answer on {settings.CELERY_BROKER_URL!r}")


def worker_stop(process, *, crash=False, timeout=30):
    """SIGTERM to the main process: a warm shutdown. crash=True: SIGKILL to the whole group."""
    try:
        if crash:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@contextmanager
def running_workers(*names, env=None, **options):
    """Start these workers, wait until each answers, yield their processes, stop them (always)."""
    processes = []
    try:
        for name in names:
            processes.append(worker_start(name, env=env, **options))
        workers_wait(*names, processes=processes)
        yield processes
    finally:
        for process in processes:
            worker_stop(process)
