"""The embedded backend beyond the shared semantics: durability, concurrency bound, fail_fast."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from queuerun import App, JobMetadata
from queuerun.errors import DrainTimeoutError, PayloadValidationError


def test_durable_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite3"
    app = App("durable")
    done: list[str] = []
    block = threading.Event()

    @app.queue("work.fifo", min_backoff=0)
    def handler(job: str) -> None:
        block.wait(5)
        done.append(job)

    # Given jobs queued by a dev server that stops before running them
    with app.local(state_file=state):
        handler.group("g").push("one")
        handler.group("g").push("two")
    block.set()
    # When a new one starts on the same state file
    with app.local(state_file=state) as local:
        local.drain(timeout=10)
    # Then every job runs, in order (the one cut off mid-run is delivered again)
    assert done[-2:] == ["one", "two"]


def test_standard_queue_concurrency_is_bounded() -> None:
    app = App("bounded")
    running = 0
    peak = 0
    lock = threading.Lock()

    @app.queue("work", concurrency=3)
    def handler(job: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    with app.local() as local:
        handler.push_many(range(30))
        local.drain(timeout=10)
    assert peak == 3


def test_drain_fail_fast_reraises_the_handler_exception() -> None:
    app = App("failfast")

    @app.queue("boom", min_backoff=5)
    def handler(job: str) -> None:
        raise KeyError("missing thing")

    with app.local() as local:
        handler.push("x")
        with pytest.raises(KeyError, match="missing thing"):
            local.drain(timeout=10, fail_fast=True)


def test_drain_times_out_while_a_retry_is_pending() -> None:
    app = App("slowdrain")

    @app.queue("later", min_backoff=30)
    def handler(job: str) -> None:
        raise RuntimeError("not yet")

    with app.local() as local:
        handler.push("x")
        with pytest.raises(DrainTimeoutError, match="1 job"):
            local.drain(timeout=0.5)


def test_backoff_false_retries_at_once_so_a_test_need_not_wait() -> None:
    # Given a queue whose retries would wait 30 s each, and a job failing twice then succeeding
    app = App("nobackoff")
    attempts: list[int] = []

    @app.queue("flaky", min_backoff=30)
    def handler(job: str, meta: JobMetadata) -> None:
        attempts.append(meta.received_count)
        if meta.received_count < 3:
            raise RuntimeError("not yet")

    # When a test drains it with backoff off
    with app.local(backoff=False) as local:
        handler.push("x")
        local.drain(timeout=5)
        # Then it ran three times, well inside the first backoff, and is no dead letter
        assert attempts == [1, 2, 3]
        assert local.dead_letters("flaky") == []


def test_fifo_replay_keeps_group_order() -> None:
    app = App("fiforeplay")
    broken = threading.Event()
    broken.set()
    done: list[tuple[str | None, int]] = []
    seqs: list[int] = []

    @app.queue("ledger.fifo", min_backoff=0, max_backoff=0)
    def handler(job: int, meta: JobMetadata) -> None:
        if broken.is_set():
            raise RuntimeError("ledger offline")
        done.append((meta.group_id, job))
        seqs.append(meta.sequence_number or 0)

    with app.local() as local:
        for n in range(4):
            handler.group("acct").dedupe(str(n)).push(n)
        local.drain(timeout=10)
        assert [d.payload for d in local.dead_letters("ledger.fifo")] == [0, 1, 2, 3]
        broken.clear()
        local.replay("ledger.fifo")
        local.drain(timeout=10)
    assert done == [("acct", 0), ("acct", 1), ("acct", 2), ("acct", 3)]
    assert seqs == sorted(seqs) and seqs[0] > 4  # fresh numbers, after the first deliveries


class Signup(BaseModel):
    email: str
    age: int


def test_pydantic_payload_is_validated_and_converted() -> None:
    app = App("pydantic")
    got: list[Signup] = []

    @app.queue("signups", min_backoff=0, max_backoff=0)
    def handler(signup: Signup) -> None:
        got.append(signup)

    with app.local() as local:
        handler.push(Signup(email="a@b.c", age=30))  # a model is serialized like a dict
        with pytest.raises(PayloadValidationError, match="field 'age'") as refused:
            handler.push({"email": "x@y.z", "age": "old"})  # validated at push: never queued
        local.drain(timeout=10)
        dead = local.dead_letters("signups")
    assert got == [Signup(email="a@b.c", age=30)]
    assert dead == []
    assert "old" not in str(refused.value)  # the field and the type, never the value


def test_fifo_group_waits_for_a_timed_out_sync_handler() -> None:
    # A sync handler's thread cannot be killed; its group must not start the next job meanwhile.
    app = App("fifolinger")
    spans: list[tuple[str, float, float]] = []

    @app.queue("steps.fifo", timeout=0.1, min_backoff=0, max_backoff=0)
    def handler(job: str, meta: JobMetadata) -> None:
        start = time.monotonic()
        if job == "slow" and meta.received_count == 1:
            time.sleep(0.4)  # ignores the signal
        spans.append((job, start, time.monotonic()))

    with app.local() as local:
        handler.group("g").push("slow")
        handler.group("g").push("next")
        local.drain(timeout=10)
    ordered = sorted(spans, key=lambda s: s[1])
    assert [job for job, _, _ in ordered] == ["slow", "slow", "next"]
    assert all(later[1] >= earlier[2] for earlier, later in itertools.pairwise(ordered))


def test_a_handlers_own_timeout_error_is_an_ordinary_failure() -> None:
    app = App("owntimeout")

    @app.queue("calls", min_backoff=0, max_backoff=0)
    async def handler(job: str) -> None:
        raise TimeoutError("upstream API timed out")

    with app.local() as local:
        handler.push("x")
        local.drain(timeout=10)
        [dead] = local.dead_letters("calls")
    assert dead.error == "TimeoutError: upstream API timed out"
