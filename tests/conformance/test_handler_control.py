"""Handlers control their job's fate: Reject dead-letters at once, max_attempts may be 1, tracebacks are kept."""

from __future__ import annotations

import threading

from queuerun import App, JobMetadata, Reject

from .harness import Harness


def test_reject_dead_letters_at_once_without_retrying(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    attempts: list[int] = []

    @app.queue("payments", min_backoff=0, max_backoff=0, max_attempts=5)
    def handler(job: dict[str, str], meta: JobMetadata) -> None:
        attempts.append(meta.received_count)
        raise Reject(f"card {job['card']} declined")

    with harness.run(app) as run:
        job_id = handler.push({"card": "4242"})
        run.drain(timeout=60)
        dead = run.dead_letters("payments")
    assert attempts == [1]
    assert [(d.job_id, d.payload, d.attempts) for d in dead] == [(job_id, {"card": "4242"}, 1)]
    assert dead[0].error == "Reject: card 4242 declined"


def test_reject_lets_the_fifo_group_move_on(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    done: list[str] = []

    @app.queue("orders.fifo", min_backoff=0, max_backoff=0)
    def handler(job: str) -> None:
        if job == "bad":
            raise Reject("not an order")
        done.append(job)

    with harness.run(app) as run:
        for job in ("a", "bad", "c"):
            handler.group("g").push(job)
        run.drain(timeout=60)
        assert [d.payload for d in run.dead_letters("orders.fifo")] == ["bad"]
    assert done == ["a", "c"]


def test_max_attempts_1_dead_letters_after_the_first_failure(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    attempts: list[int] = []

    @app.queue("once", min_backoff=0, max_backoff=0, max_attempts=1)
    def handler(job: str, meta: JobMetadata) -> None:
        attempts.append(meta.received_count)
        raise ValueError("no second chance")

    with harness.run(app) as run:
        handler.push("x")
        run.drain(timeout=60)
        dead = run.dead_letters("once")
    assert attempts == [1]
    assert [(d.attempts, d.error) for d in dead] == [(1, "ValueError: no second chance")]


def _failing_deep_inside(job: str) -> None:
    raise KeyError(job)


def test_dead_letters_keep_the_failure_traceback(harness: Harness, app_name: str) -> None:
    app = App(app_name)

    @app.queue("traced", max_attempts=1)
    def handler(job: str) -> None:
        _failing_deep_inside(job)

    with harness.run(app) as run:
        handler.push("missing-key")
        run.drain(timeout=60)
        [letter] = run.dead_letters("traced")
    assert letter.traceback.startswith("Traceback (most recent call last):"), letter.traceback
    assert "in _failing_deep_inside" in letter.traceback
    assert letter.traceback.endswith("KeyError: 'missing-key'")


def test_concurrency_1_never_runs_two_jobs_of_the_queue_at_once(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    lock = threading.Lock()
    running = [0]
    peak = [0]
    done: list[int] = []

    @app.queue("serial", concurrency=1)
    def handler(job: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.02)  # hold the slot long enough for others to be delivered meanwhile
        with lock:
            running[0] -= 1
            done.append(job)

    with harness.run(app) as run:
        handler.push_many(list(range(8)))
        run.drain(timeout=120)
        assert run.dead_letters("serial") == []
    assert sorted(done) == list(range(8))
    assert peak[0] == 1
