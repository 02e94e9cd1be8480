"""Running one delivered job, the same way on every backend and transport.

A transport (the embedded worker, the push server, a pull worker) receives a message, numbers
the attempt, and hands a :class:`~queuerun.wire.ReceivedJob` to :meth:`DeliveryCore.deliver`. The
core decodes it, runs the handler with the queue's timeout and signal, and returns a
:class:`Verdict` the transport maps to its own terms:

=========  ==========================================  ===========  =====================
action     when                                         embedded     push / pull
=========  ==========================================  ===========  =====================
``ack``    the handler returned; or, on a FIFO queue,   row done     204 / ack
           the job had completed before (a redelivery)
``retry``  the attempt failed and attempts remain       retry later  500 / nack
``dead``   dead-lettered through the backend already:   (buried)     204 / ack
           ``Reject``, payload validation, an
           undecodable message, or the last attempt
=========  ==========================================  ===========  =====================

The core also writes completion records (where the backend keeps them), captures failures for
``drain(fail_fast=True)`` and logs one line per attempt, with the traceback on a dead letter. A
backend or store failure inside the core raises: the transport must then leave the job to be
delivered again (the push server answers 503; the embedded worker retries it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback as tb
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .context import JobContext
from .errors import UndecodableJobError
from .handlers import Outcome, run_handler
from .spec import QueueSpec
from .wire import ReceivedJob

if TYPE_CHECKING:
    from .app import App
    from .backends.base import Backend

Action = Literal["ack", "retry", "dead"]
Linger = Callable[[QueueSpec], "float | None"]


def error_text(error: BaseException | None) -> str:
    """One line naming the error: ``ValueError: bad input``."""
    return "" if error is None else f"{type(error).__name__}: {error}"


def traceback_text(error: BaseException | None) -> str:
    """The error's formatted traceback (with its causes), or just its line when it was never raised."""
    return "" if error is None else "".join(tb.format_exception(error)).rstrip("\n")


@dataclass(frozen=True)
class Verdict:
    """What became of one delivery, for the transport to act on."""

    action: Action
    attempt: int
    outcome: Outcome
    delay: float = 0.0  # with "retry": the queue's backoff before the next attempt
    already: str | None = None  # "done" or "dead": a completed job delivered again, not run

    @property
    def error(self) -> BaseException | None:
        return self.outcome.error

    @property
    def error_text(self) -> str:
        return error_text(self.outcome.error)


def _no_linger(spec: QueueSpec) -> float | None:
    return None  # wait for a timed-out sync handler's thread: a FIFO group never runs two jobs at once


class DeliveryCore:
    """Runs deliveries of ``app``'s jobs on ``backend``; one per transport instance.

    ``fifo_linger(spec)``: how long to hold the answer for a timed-out sync handler of a FIFO queue
    (None: until its thread ends). ``done_level``: the log level of a completed job.
    ``trace_retries``: log a failed attempt that will be retried with its traceback too.
    ``backoff=False``: a retry is due at once (``app.local(backoff=False)``). ``schedules_retries``:
    the transport runs the retry after ``Verdict.delay`` itself, so the job line says when.
    """

    def __init__(
        self,
        app: App,
        backend: Backend,
        *,
        executor: Executor | None = None,
        fifo_linger: Linger = _no_linger,
        logger: logging.Logger | None = None,
        done_level: int = logging.INFO,
        trace_retries: bool = False,
        backoff: bool = True,
        schedules_retries: bool = False,
    ) -> None:
        self.app = app
        self.backend = backend
        self.executor = executor
        self.fifo_linger = fifo_linger
        self.log = logger or logging.getLogger("queuerun")
        self.done_level = done_level
        self.trace_retries = trace_retries
        self.backoff = backoff
        self.schedules_retries = schedules_retries

    async def _io(self, call: Callable[[], Any]) -> Any:
        """A backend primitive: on the loop when the backend says it is fast and local, else in a thread."""
        if self.backend.inline_io:
            return call()
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def deliver(self, spec: QueueSpec, job: ReceivedJob, *, fields: dict[str, Any] | None = None) -> Verdict:
        """Run delivery number ``job.received_count`` of ``job``; see the module docstring."""
        backend = self.backend
        attempt = job.received_count
        extra: dict[str, Any] = {"queue": spec.name, "job_id": job.job_id, "attempt": attempt, **(fields or {})}
        tracked = backend.tracks_completions(spec)
        if (spec.fifo or spec.exactly_once) and tracked:  # redeliveries of a completed job: see tracks_completions
            done = await self._io(lambda: backend.completion_status(spec, job.job_id))
            if done is not None:
                self.log.info("already %s: acknowledged without running again", done, extra=extra)
                return Verdict("ack", attempt, Outcome("done", None, 0.0), already=done)

        recorder = _CompletionRecorder(backend, spec, job.job_id) if tracked else None
        try:
            payload, meta = job.decode(spec.name, fifo=spec.fifo)
        except UndecodableJobError as exc:  # the message itself is unusable: retrying cannot help
            outcome = Outcome("dead", exc, 0.0)
        else:
            if meta.group_id is not None:
                extra["group_id"] = meta.group_id
            outcome = await run_handler(
                self.app._handler_info(spec.name),
                payload,
                meta,
                ctx=JobContext(app=self.app, queue=spec.name, user=meta.user),
                timeout=spec.timeout,
                executor=self.executor,
                linger=self.fifo_linger(spec) if spec.fifo else 0.0,
                on_done=recorder,
            )
        if outcome.error is not None:
            backend.record_failure(outcome.error)

        if outcome.status == "done":
            if recorder is not None:
                await self._io(recorder.ensure)  # a failed write raises: the job is delivered again
            verdict = Verdict("ack", attempt, outcome)
        elif outcome.status == "retry" and attempt < spec.max_attempts:
            verdict = Verdict("retry", attempt, outcome, delay=spec.backoff(attempt) if self.backoff else 0.0)
        else:
            error, trace = error_text(outcome.error), traceback_text(outcome.error)
            await self._io(lambda: backend.dead_letter(spec, job, error=error, traceback=trace, attempts=attempt))
            if tracked:
                await self._io(lambda: backend.record_completion(spec, job.job_id, "dead", error))
            verdict = Verdict("dead", attempt, outcome)
        self._log(spec, job, verdict, extra)
        return verdict

    def _log(self, spec: QueueSpec, job: ReceivedJob, verdict: Verdict, extra: dict[str, Any]) -> None:
        """One line per attempt: ``emails group=g job=7 attempt=2 3.1ms retry (ValueError: no)``.

        The same fields are passed as ``extra`` (Cloud Logging keys). A dead letter is logged with
        its exception, so its traceback reaches the dev log and Error Reporting.
        """
        if verdict.action == "ack" and not self.log.isEnabledFor(self.done_level):
            return  # the common case on the push server: build nothing
        status = {"ack": "done", "retry": "retry", "dead": "dead"}[verdict.action]
        error = verdict.error_text
        duration_ms = round(verdict.outcome.duration * 1000, 1)
        fields = {**extra, "status": status, "duration_ms": duration_ms}
        if error:
            fields["error"] = error
        group = extra.get("group_id")
        shown = status
        if verdict.action == "retry" and self.schedules_retries:
            due = time.localtime(time.time() + verdict.delay)
            shown = f"retry in {verdict.delay:.3g}s at {time.strftime('%H:%M:%S', due)}"
        line = (
            f"{spec.name}{f' group={group}' if group is not None else ''} job={job.job_id} "
            f"attempt={verdict.attempt} {duration_ms:.1f}ms {shown}{f' ({error})' if error else ''}"
        )
        failure = verdict.error
        if verdict.action == "ack":
            self.log.log(self.done_level, line, extra=fields)
        elif verdict.action == "retry":
            exc_info = failure if self.trace_retries and failure is not None else None
            self.log.warning(line, extra=fields, exc_info=exc_info)
        else:
            self.log.error(line, extra=fields, exc_info=failure)


class _CompletionRecorder:
    """Writes a job's "done" record the moment its handler returns (``run_handler``'s ``on_done``).

    Called in the handler's thread, it must not raise: a failed write is kept and tried again by
    ``ensure()`` on the delivery's path, whose error leaves the job to be delivered again.
    """

    def __init__(self, backend: Backend, spec: QueueSpec, job_id: str) -> None:
        self._backend, self._spec, self._job_id = backend, spec, job_id
        self._written = False

    def __call__(self) -> None:
        with contextlib.suppress(Exception):  # ensure() runs again on the delivery's path and reports it
            self.ensure()

    def ensure(self) -> None:
        if not self._written:
            self._backend.record_completion(self._spec, self._job_id, "done", "")
            self._written = True
