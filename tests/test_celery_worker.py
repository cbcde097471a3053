"""The worker that `make run` and production start comes up on the configured broker and answers."""

from tests.worker import running_workers, worker_env


def test_worker_starts_on_the_configured_broker_and_answers_ping():
    # As production starts it (gossip, mingle and heartbeats on); running_workers fails unless it answers.
    with running_workers("ping-test", env=worker_env(database=False), quiet=False) as [worker]:
        assert worker.poll() is None
