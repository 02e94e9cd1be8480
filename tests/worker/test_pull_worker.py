"""The pull worker on the emulators: jobs of delivery="pull" queues run through streaming pull."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from gcp.gcp_helpers import Calls

from queuerun import App, JobMetadata
from queuerun.errors import ConfigurationError
from queuerun.worker import PullWorker

pytestmark = pytest.mark.emulators

Pull = Callable[..., PullWorker]


def test_pull_jobs_run_once_each_and_are_acknowledged(new_app: Callable[[], App], pull: Pull) -> None:
    app = new_app()
    calls = Calls()

    @app.queue("reports", delivery="pull")
    def handle(job: dict[str, int], meta: JobMetadata) -> None:
        calls.add((job["n"], meta.received_count, meta.job_id))

    pull(app)
    ids = [handle.push({"n": n}) for n in range(20)]
    app.backend.drain(timeout=60)
    seen = calls.items
    assert sorted(n for n, _, _ in seen) == list(range(20))
    assert {attempt for _, attempt, _ in seen} == {1}
    assert sorted(job_id for _, _, job_id in seen) == sorted(ids)


def test_concurrency_bounds_the_jobs_running_at_once(new_app: Callable[[], App], pull: Pull) -> None:
    app = new_app()
    lock = threading.Lock()
    running, peak, done = [0], [0], Calls()

    @app.queue("bounded", delivery="pull", concurrency=2)
    def handle(job: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        done.add(job)

    pull(app)
    handle.push_many(list(range(12)))
    done.wait_for(lambda items: len(items) == 12, timeout=60)
    assert peak[0] == 2


def test_failed_job_is_retried_then_dead_lettered_with_its_error(new_app: Callable[[], App], pull: Pull) -> None:
    app = new_app()
    calls = Calls()

    @app.queue("doomed", delivery="pull", max_attempts=5, min_backoff=0, max_backoff=0)
    def handle(job: str, meta: JobMetadata) -> None:
        calls.add(meta.received_count)
        raise ValueError(f"cannot do {job}")

    pull(app)
    job_id = handle.push("x")
    app.backend.drain(timeout=60)
    assert calls.items == [1, 2, 3, 4, 5]
    [letter] = app.backend.dead_letters("doomed")
    assert (letter.job_id, letter.attempts, letter.payload) == (job_id, 5, "x")
    assert "cannot do x" in letter.error


def test_fifo_pull_queue_keeps_group_order_through_retries(new_app: Callable[[], App], pull: Pull) -> None:
    app = new_app()
    calls = Calls()
    failed: set[int] = set()

    @app.queue("ledger.fifo", delivery="pull", exactly_once=True, min_backoff=0.1, max_backoff=0.1)
    def handle(job: int, meta: JobMetadata) -> None:
        if job == 1 and job not in failed:  # the second job of group a fails once
            failed.add(job)
            calls.add((meta.group_id, job, "failed"))
            raise ConnectionError("try again")
        calls.add((meta.group_id, job, meta.received_count))

    pull(app)
    for n in range(4):
        for group in ("a", "b"):
            handle.group(group).push(n)
    app.backend.drain(timeout=60)
    a = [(job, attempt) for g, job, attempt in calls.items if g == "a"]
    b = [job for g, job, _ in calls.items if g == "b"]
    assert a == [(0, 1), (1, "failed"), (1, 2), (2, 1), (3, 1)]
    assert b == [0, 1, 2, 3]


def test_worker_refuses_an_app_without_pull_queues(new_app: Callable[[], App]) -> None:
    app = new_app()

    @app.queue("emails")
    def handle(job: str) -> None: ...

    with pytest.raises(ConfigurationError, match=r"no queue with delivery='pull'.*emails"):
        PullWorker(app)
    with pytest.raises(ConfigurationError, match="queue 'emails': delivery is 'push'"):
        PullWorker(app, queues=["emails"])
