"""The embedded backend beyond the shared semantics: durability, concurrency bound, fail_fast."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from queuerun import App
from queuerun.errors import DrainTimeoutError


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
