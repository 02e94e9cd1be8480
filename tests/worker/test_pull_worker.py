"""The pull worker on the emulators: jobs of delivery="pull" queues run through streaming pull."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from gcp.gcp_helpers import Calls

from queuerun import App, JobMetadata
from queuerun.errors import ConfigurationError
from queuerun.names import subscription_id
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


def _subscription(worker: PullWorker, queue: str) -> str:
    return f"projects/{worker.backend.project}/subscriptions/{subscription_id(worker.app.name, queue)}"


def _leased(worker: PullWorker, job_id: str, count: int = 1, timeout: float = 30) -> list[Any]:
    """The messages of ``job_id`` the worker is running, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with worker._inflight_lock:
            found = [m for _, m in worker._inflight.values() if m.message_id == job_id]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} was not delivered {count} time(s) within {timeout} s")


@pytest.mark.filterwarnings("ignore:The return_immediately flag is deprecated:DeprecationWarning")
def test_exactly_once_runs_a_redelivered_message_once_and_reports_the_refused_ack(
    new_app: Callable[[], App], pull: Pull, caplog: pytest.LogCaptureFixture
) -> None:
    app = new_app()
    calls = Calls()
    release = threading.Event()

    @app.queue("ledger", delivery="pull", exactly_once=True)
    def handle(job: str, meta: JobMetadata) -> None:
        calls.add((job, meta.job_id))
        assert release.wait(30)

    worker = pull(app)
    job_id = handle.push("entry")
    calls.wait_for(lambda items: len(items) == 1)
    [first] = _leased(worker, job_id)
    # Pub/Sub delivers the message again while the first delivery runs (as when a lease lapses):
    # only the newest ack id may acknowledge it from now on.
    worker.subscriber.modify_ack_deadline(
        subscription=_subscription(worker, "ledger"),
        ack_ids=[first.ack_id],
        ack_deadline_seconds=0,
    )
    _leased(worker, job_id, count=2)
    with caplog.at_level(logging.INFO, logger="queuerun.worker"):
        release.set()
        app.backend.drain(timeout=30)
        deadline = time.monotonic() + 30
        while not any("already done" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert calls.items == [("entry", job_id)]  # the handler ran once
    messages = [r.getMessage() for r in caplog.records]
    assert any("acknowledgement refused (INVALID_ACK_ID)" in m for m in messages), messages
    assert any("already done" in m for m in messages), messages
    worker.stop(grace=5)
    left = worker.subscriber.pull(
        subscription=_subscription(worker, "ledger"),
        max_messages=10,
        return_immediately=True,
    )
    assert list(left.received_messages) == []  # the redelivery was acknowledged


def test_fifo_pull_group_moves_on_once_its_head_is_dead_lettered(new_app: Callable[[], App], pull: Pull) -> None:
    from queuerun import Reject

    app = new_app()
    calls = Calls()

    @app.queue("steps.fifo", delivery="pull", max_attempts=2, min_backoff=0, max_backoff=0)
    def handle(job: str, meta: JobMetadata) -> None:
        calls.add((meta.group_id, job, meta.received_count))
        if job == "poison":
            raise ValueError("never works")
        if job == "refused":
            raise Reject("not wanted")

    pull(app)
    for job in ("poison", "next", "refused", "last"):
        handle.group("g").push(job)
    app.backend.drain(timeout=60)
    assert calls.items == [
        ("g", "poison", 1),
        ("g", "poison", 2),  # retried here, holding the group, then dead-lettered on its last attempt
        ("g", "next", 1),
        ("g", "refused", 1),  # Reject: dead-lettered at once
        ("g", "last", 1),
    ]
    dead = {d.payload: d for d in app.backend.dead_letters("steps.fifo")}
    assert set(dead) == {"poison", "refused"}
    assert (dead["poison"].attempts, dead["refused"].attempts) == (2, 1)
    assert "not wanted" in dead["refused"].error
