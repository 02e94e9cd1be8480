"""run_handler's on_done: the completion hook runs the moment a handler returns, and only then."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from queuerun.context import JobContext
from queuerun.handlers import inspect_handler, run_handler
from queuerun.metadata import JobMetadata


def _meta() -> JobMetadata:
    return JobMetadata(job_id="j1", queue_name="q.fifo", queued_at=dt.datetime.now(dt.UTC), received_count=1)


POOL = ThreadPoolExecutor(1, thread_name_prefix="test-handler")  # one thread: a later task waits for the job


def _run(handler: Any, on_done: Any, *, timeout: float = 5.0) -> str:
    async def main() -> str:
        outcome = await run_handler(
            inspect_handler(handler, queue="q.fifo"),
            {},
            _meta(),
            ctx=JobContext(app=None, queue="q.fifo", user=None),  # type: ignore[arg-type]
            timeout=timeout,
            executor=POOL,
            on_done=on_done,
        )
        return outcome.status

    return asyncio.run(main())


def test_a_sync_handlers_completion_hook_runs_in_its_thread_before_the_outcome_is_reported() -> None:
    seen: list[tuple[str, int]] = []

    def handler(job: Any) -> None:
        seen.append(("handler", threading.get_ident()))

    status = _run(handler, lambda: seen.append(("done", threading.get_ident())))
    assert status == "done"
    assert [what for what, _ in seen] == ["handler", "done"] and seen[0][1] == seen[1][1]


def test_a_failing_handler_does_not_complete() -> None:
    done: list[str] = []

    def handler(job: Any) -> None:
        raise RuntimeError("no")

    assert _run(handler, lambda: done.append("done")) == "retry" and done == []


def test_a_sync_handler_that_returns_after_its_timeout_has_failed_and_does_not_complete() -> None:
    returned = threading.Event()
    done: list[str] = []

    def handler(job: Any, meta: JobMetadata) -> None:
        meta.signal.wait(5)  # stops when told to, and returns
        returned.set()

    assert _run(handler, lambda: done.append("done"), timeout=0.1) == "retry"
    assert returned.wait(5)
    POOL.submit(lambda: None).result(5)  # one thread: this ran after the job, hook included
    assert done == []


def test_an_async_handlers_completion_hook_runs_before_the_outcome_is_reported() -> None:
    seen: list[str] = []

    async def handler(job: Any) -> None:
        seen.append("handler")

    assert _run(handler, lambda: seen.append("done")) == "done" and seen == ["handler", "done"]
