"""The embedded backend: every queue semantic, in-process. The reference for the conformance suite.

Workers run on one asyncio loop in a background thread. Async handlers run on the loop; sync
handlers run in a thread pool. FIFO queues run only the head job of each idle group; a failing
head blocks its group while it is retried, then goes to dead letters and the group moves on.
The worker is a thin transport over :class:`~queuerun.delivery.DeliveryCore`: it claims rows (at
most ``concurrency`` running per queue) and maps the core's verdict to the row's next state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ..delivery import DeliveryCore, Verdict
from ..errors import ConfigurationError, DrainTimeoutError, QueueRunError
from ..handlers import Outcome
from ..names import is_fifo
from ..spec import QueueSpec
from ..wire import OutgoingJob, ReceivedJob
from .base import Backend, DeadLetter, Progress
from .embedded_store import JobStore, StoredJob

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("queuerun")

JobListener = Callable[[StoredJob, Outcome, str], None]  # (job, outcome, final status)
IDLE_POLL = 0.5  # seconds between checks when nothing wakes the dispatcher
# The store keeps a dead letter's error and traceback in one column, split on this separator
# (ASCII record separator: it does not occur in an error line).
TRACE_SEPARATOR = "\x1e"


class EmbeddedBackend(Backend):
    name = "embedded"
    inline_io = True  # SQLite on the worker's own loop, as the rest of its bookkeeping

    def __init__(self, state_file: str | Path | None = None, *, max_threads: int = 64, backoff: bool = True) -> None:
        self.store = JobStore(state_file)
        self.dedupe = self.store.dedupe_store()
        self._max_threads = max_threads
        self._backoff = backoff
        self._app: App | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._poked = False
        self._running: dict[str, int] = {}
        self._running_total = 0  # claimed and not settled, over every queue
        self._inflight: set[str] = set()  # ids of the jobs the workers run now
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = threading.Condition()
        # Bounded: `queuerun dev` runs for hours and records every failed attempt.
        self._failures: collections.deque[BaseException] = collections.deque(maxlen=100)
        self.listeners: list[JobListener] = []

    # -- push -------------------------------------------------------------------------------
    def _publish(self, spec: QueueSpec, jobs: Sequence[OutgoingJob]) -> list[str | BaseException]:
        ids: list[str | BaseException] = list(self.store.insert(jobs, fifo=spec.fifo))
        self._poke()
        return ids

    def _poke(self) -> None:
        # One wake-up per dispatcher pass is enough: it claims everything inserted before it starts,
        # and clears the flag before claiming, so a push after that pokes again. (A wake-up costs a
        # socket write: one per push halved the push rate.)
        if self._poked:
            return
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            self._poked = True
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(wake.set)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, app: App) -> None:
        if self._thread is not None:
            return
        self._app = app
        self._core = DeliveryCore(app, self, backoff=self._backoff, schedules_retries=True)
        self._stopping = False
        recovered = self.store.recover()
        if recovered:
            log.info("recovered %d job(s) left running by a previous process", recovered)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="queuerun-embedded", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self, grace: float = 5.0) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._stopping = True
        self._poke()
        thread.join(grace + 5)
        self._thread = None

    def close(self) -> None:
        self.stop()
        self.store.close()

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        executor = ThreadPoolExecutor(self._max_threads, thread_name_prefix="queuerun-job")
        loop.set_default_executor(executor)
        self._loop = loop
        self._wake = asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(self._dispatch())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            loop.close()
            self._loop = None
            self._wake = None
            with self._idle:
                self._idle.notify_all()

    async def _dispatch(self) -> None:
        assert self._wake is not None and self._app is not None
        app = self._app
        while not self._stopping:
            self._wake.clear()
            self._poked = False
            claimed = 0
            now = time.time()
            for spec in app.specs:
                free = spec.concurrency - self._running.get(spec.name, 0)
                for job in self.store.claim(spec.name, fifo=spec.fifo, limit=free, now=now):
                    claimed += 1
                    self._running[spec.name] = self._running.get(spec.name, 0) + 1
                    self._running_total += 1
                    self._inflight.add(job.id)
                    task = asyncio.create_task(self._run(app, spec, job))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            if claimed:
                await asyncio.sleep(0)  # let the new tasks start, then look for more work
                continue
            # Nothing runnable: sleep until a push or a finished job wakes us, or a retry comes due.
            next_at = self.store.next_available()
            now = time.time()
            delay = IDLE_POLL if next_at is None or next_at <= now else min(IDLE_POLL, next_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        # Let in-flight jobs finish; the ones that do not are delivered again on the next start.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
            for task in self._tasks:
                task.cancel()

    async def _run(self, app: App, spec: QueueSpec, job: StoredJob) -> None:
        received = ReceivedJob(
            job_id=job.id,
            data=job.data,
            attributes=job.attributes,
            received_count=job.attempts,
            sequence_number=job.group_seq,
        )
        try:
            verdict = await self._core.deliver(spec, received)
        except Exception as exc:  # a bug of ours must not lose the job: treat it as a failed attempt
            log.exception("queue %s: job %s: delivery failed, retrying it", spec.name, job.id)
            delay = spec.backoff(job.attempts) if self._backoff else 0.0
            verdict = Verdict("retry", job.attempts, Outcome("retry", exc, 0.0), delay=delay)
        self._settle(spec, job, verdict)

    def _settle(self, spec: QueueSpec, job: StoredJob, verdict: Verdict) -> None:
        """Map the core's verdict to the row: done, ready again after the backoff, or (already) dead."""
        try:
            if verdict.action == "ack":
                self.store.finish(job.id)
            elif verdict.action == "retry":
                self.store.retry(job.id, at=time.time() + verdict.delay, error=verdict.error_text)
        finally:
            self._running[spec.name] -= 1
            self._running_total -= 1
            self._inflight.discard(job.id)
            final = {"ack": "done", "retry": "retry", "dead": "dead"}[verdict.action]
            for listener in list(self.listeners):
                listener(job, verdict.outcome, final)
            if self._wake is not None:
                self._wake.set()
            # Wake drain() only when it may return: nothing running any more, or a failure to raise.
            # (Waking it after every job made the worker and drain() threads trade the GIL per job.)
            if self._running_total == 0 or verdict.error is not None:
                with self._idle:
                    self._idle.notify_all()

    def dead_letter(self, spec: QueueSpec, job: ReceivedJob, *, error: str, traceback: str, attempts: int) -> None:
        if job.job_id not in self._inflight:  # e.g. a push server's message: burying it would lose it
            raise ConfigurationError(
                f"queue {spec.name!r}: job {job.job_id} was not delivered by the embedded backend, which can "
                "dead-letter only its own jobs (a push server needs the gcp backend: QUEUERUN_BACKEND=gcp)"
            )
        self.store.bury(job.job_id, error=f"{error}{TRACE_SEPARATOR}{traceback}" if traceback else error)

    # -- local operations -------------------------------------------------------------------
    def drain(self, timeout: float | None = None, *, fail_fast: bool = False) -> None:
        if self._thread is None:
            raise QueueRunError("the embedded backend is not running: use `with app.local() as local:`")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while True:
                if fail_fast:
                    self._raise_first_failure()
                pending = self.store.pending_count()
                if pending == 0 and self._running_total == 0:
                    self._clear_failures()
                    return
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise DrainTimeoutError(f"drain timed out after {timeout:g} s with {pending} job(s) pending")
                self._idle.wait(0.1 if left is None else min(0.1, left))

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        out = []
        for job in self.store.dead(queue):
            received = ReceivedJob(job.id, job.data, job.attributes, job.attempts, job.group_seq)
            error, _, trace = (job.error or "").partition(TRACE_SEPARATOR)
            out.append(DeadLetter.from_received(received, queue, attempts=job.attempts, error=error, traceback=trace))
        return out

    def replay(self, queue: str, progress: Progress | None = None, *, job_id: str | None = None) -> list[str]:
        """Queue the dead letters of ``queue`` again (all, or only ``job_id``), keeping their order."""
        ids = self.store.replay(queue, fifo=is_fifo(queue), job_id=job_id)  # one transaction: all or nothing
        self._poke()
        if progress is not None:
            progress(len(ids), len(ids))
        return ids

    def discard(self, queue: str, job_id: str | None = None) -> int:
        """Delete dead letters of ``queue`` (all, or only ``job_id``) for good; returns how many."""
        return self.store.discard(queue, job_id)
