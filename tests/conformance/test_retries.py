"""Failures are retried with backoff, then dead-lettered; dead letters can be replayed."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from queuerun import App, JobMetadata
from queuerun.errors import PayloadValidationError
from queuerun.wire import build_job

from .harness import Harness


def test_failed_job_is_retried_until_it_succeeds(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    attempts: list[int] = []

    @app.queue("flaky", min_backoff=0, max_backoff=0)
    def handler(job: str, meta: JobMetadata) -> None:
        attempts.append(meta.received_count)
        if meta.received_count < 3:
            raise ConnectionError("service unavailable")

    with harness.run(app) as run:
        handler.push("x")
        run.drain(timeout=60)
        assert run.dead_letters("flaky") == []
    assert attempts == [1, 2, 3]


def test_job_failing_every_attempt_goes_to_dead_letters(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    attempts: list[int] = []

    @app.queue("doomed", min_backoff=0, max_backoff=0, max_attempts=5)
    def handler(job: dict[str, Any], meta: JobMetadata) -> None:
        attempts.append(meta.received_count)
        raise ValueError(f"bad job {job['id']}")

    with harness.run(app) as run:
        job_id = handler.push({"id": 7}, params={"source": "test"})
        run.drain(timeout=60)
        dead = run.dead_letters("doomed")
    assert attempts == [1, 2, 3, 4, 5]
    assert len(dead) == 1
    letter = dead[0]
    assert (letter.payload, letter.attempts, letter.params) == ({"id": 7}, 5, {"source": "test"})
    assert "bad job 7" in letter.error
    assert letter.job_id == job_id


@pytest.mark.emulator_gap(
    "the emulator redelivers a pull subscription's first nacked message at once, whatever its retry policy "
    "(measured; Pub/Sub applies the retry policy to nacks)",
    harnesses=("pull",),
)
def test_backoff_grows_between_attempts(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    times: list[float] = []

    @app.queue("slowretry", min_backoff=0.2, max_backoff=0.5)
    def handler(job: str, meta: JobMetadata) -> None:
        times.append(time.monotonic())
        if meta.received_count < 4:
            raise RuntimeError("again")

    with harness.run(app) as run:
        handler.push("x")
        run.drain(timeout=60)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    # 0.2, 0.4, then capped at 0.5 (never faster than the backend's own floor)
    for gap, expected in zip(gaps, (0.2, 0.4, 0.5), strict=True):
        assert gap >= max(expected, harness.retry_floor) * 0.9, gaps
    if harness.retry_floor == 0:  # the embedded backend keeps to the schedule; the emulator approximates it
        for gap, expected in zip(gaps, (0.2, 0.4, 0.5), strict=True):
            assert gap < expected + 0.15, gaps


def test_replayed_dead_letter_runs_again(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    broken = threading.Event()
    broken.set()
    done: list[dict[str, int]] = []

    @app.queue("replayone", min_backoff=0, max_backoff=0)
    def handler(job: dict[str, int]) -> None:
        if broken.is_set():
            raise RuntimeError("downstream is down")
        done.append(job)

    with harness.run(app) as run:
        handler.push({"n": 1})
        run.drain(timeout=60)
        assert [d.payload for d in run.dead_letters("replayone")] == [{"n": 1}]
        broken.clear()
        assert len(run.replay("replayone")) == 1
        run.drain(timeout=60)
        assert run.dead_letters("replayone") == []
    assert done == [{"n": 1}]


def test_replay_keeps_the_order_of_a_fifo_group(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    broken = threading.Event()
    broken.set()
    done: list[str] = []

    @app.queue("replayable.fifo", min_backoff=0, max_backoff=0)
    def handler(job: str) -> None:
        if broken.is_set():
            raise RuntimeError("downstream is down")
        done.append(job)

    with harness.run(app) as run:
        for job in ("a", "b", "c"):
            handler.group("g").push(job)
        run.drain(timeout=90)
        assert [d.payload for d in run.dead_letters("replayable.fifo")] == ["a", "b", "c"]
        broken.clear()
        replayed = run.replay("replayable.fifo")
        run.drain(timeout=60)
        assert run.dead_letters("replayable.fifo") == []
    assert len(replayed) == 3
    assert done == ["a", "b", "c"]


@dataclass
class Order:
    order_id: int
    email: str


def test_typed_payload_is_converted(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    got: list[Order] = []

    @app.queue("typed")
    def handler(order: Order, meta: JobMetadata) -> None:
        got.append(order)

    with harness.run(app) as run:
        handler.push({"order_id": 5, "email": "a@b.c"})
        run.drain(timeout=60)
    assert got == [Order(order_id=5, email="a@b.c")]


def test_invalid_typed_payload_is_dead_lettered_without_retry(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    calls: list[Order] = []

    @app.queue("typed", min_backoff=0, max_backoff=0)
    def handler(order: Order) -> None:
        calls.append(order)

    with harness.run(app) as run:
        with pytest.raises(PayloadValidationError, match="order_id"):
            handler.push({"order_id": "not a number", "email": "a@b.c"})  # validated at push: not queued
        # Another producer's message skips that check: it is dead-lettered on delivery, not retried.
        job = build_job(
            "typed", {"order_id": "not a number", "email": "a@b.c"}, group_id=None, dedupe_id=None, params={}, user=None
        )
        app.backend.enqueue(app.spec("typed"), [job])
        run.drain(timeout=60)
        dead = run.dead_letters("typed")
    assert calls == []
    assert len(dead) == 1 and dead[0].attempts == 1
    assert "order_id" in dead[0].error and "(got str)" in dead[0].error
    assert "not a number" not in dead[0].error  # field and type, never the value
