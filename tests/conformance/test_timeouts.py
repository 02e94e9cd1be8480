"""At the timeout the signal is set, async handlers are cancelled, and the job fails."""

from __future__ import annotations

import asyncio
import threading

from queuerun import App, JobMetadata

from .harness import Harness


def test_async_handler_is_cancelled_at_timeout_and_retried(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    cancelled: list[int] = []
    finished: list[int] = []

    @app.queue("slow", timeout=0.3, min_backoff=0, max_backoff=0)
    async def handler(job: str, meta: JobMetadata) -> None:
        try:
            if meta.received_count == 1:
                await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(meta.received_count)
            raise
        finished.append(meta.received_count)

    with harness.run(app) as run:
        handler.push("x")
        run.drain(timeout=60)
    assert cancelled == [1]
    assert finished == [2]


def test_sync_handler_sees_the_signal_and_the_job_fails(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    aborted: list[bool] = []
    attempts: list[int] = []
    lock = threading.Lock()

    @app.queue("slowsync", timeout=0.3, min_backoff=0, max_backoff=0)
    def handler(job: str, meta: JobMetadata) -> None:
        with lock:
            attempts.append(meta.received_count)
        if meta.received_count == 1:
            aborted.append(meta.signal.wait(5))  # returns True once the timeout fires

    with harness.run(app) as run:
        handler.push("x")
        run.drain(timeout=60)
    assert aborted == [True]
    assert attempts[:2] == [1, 2]


def test_job_timing_out_every_attempt_is_dead_lettered(harness: Harness, app_name: str) -> None:
    app = App(app_name)

    @app.queue("hopeless", timeout=0.1, min_backoff=0, max_backoff=0)
    async def handler(job: str) -> None:
        await asyncio.sleep(5)

    with harness.run(app) as run:
        handler.push("x")
        run.drain(timeout=60)
        dead = run.dead_letters("hopeless")
    assert [(d.payload, d.attempts) for d in dead] == [("x", 5)]
    assert "timed out" in dead[0].error
