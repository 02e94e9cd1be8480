"""Run one delivery and get its decision: the pull worker's only door into the consume side.

Interim: until the shared delivery core (``queuerun.delivery.DeliveryCore``, issue 11 item 1)
lands, this mirrors what the push server does for one job (decode, run the handler with the
queue's timeout, ack/retry/dead, dead-letter through the backend, completion records, one log
line). :func:`deliver` is the one function to re-point at the core; the worker uses nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..context import JobContext
from ..errors import UndecodableJobError
from ..handlers import Outcome, run_handler
from ..spec import QueueSpec
from ..wire import ReceivedJob

if TYPE_CHECKING:
    from ..app import App
    from ..backends.gcp import GcpBackend

log = logging.getLogger("queuerun.worker")

Action = Literal["ack", "retry", "dead"]


@dataclass(frozen=True)
class Verdict:
    """What became of one delivery (the same shape as the delivery core's)."""

    action: Action
    attempt: int
    outcome: Outcome
    delay: float = 0.0  # with "retry": the queue's backoff before the next attempt
    already: str | None = None  # "done" or "dead": a completed job delivered again, not run

    @property
    def error_text(self) -> str:
        error = self.outcome.error
        return "" if error is None else f"{type(error).__name__}: {error}"


def guarded(spec: QueueSpec) -> bool:
    """Whether a job's completion is recorded and checked before it runs again.

    FIFO queues (Pub/Sub redelivers a group's later jobs after a nack) and exactly-once queues
    (an acknowledgement that fails leaves the message to be redelivered, and Google's exactly-once
    guide says to keep each message's progress to avoid duplicate work then:
    cloud.google.com/pubsub/docs/exactly-once-delivery).
    """
    return spec.fifo or spec.exactly_once


class Delivery:
    """Runs deliveries of ``app``'s jobs on its Google Cloud backend."""

    def __init__(self, app: App, backend: GcpBackend, *, executor: Executor | None = None) -> None:
        self.app = app
        self.backend = backend
        self.executor = executor

    async def _io(self, call: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def deliver(self, spec: QueueSpec, job: ReceivedJob) -> Verdict:
        """Run delivery number ``job.received_count`` of ``job``. A store failure raises (nack it)."""
        backend = self.backend
        attempt = job.received_count
        fields: dict[str, Any] = {"queue": spec.name, "job_id": job.job_id, "attempt": attempt}
        tracked = guarded(spec) or backend.track_completions
        topic = backend.topic_path(spec.name) if tracked else ""
        if guarded(spec):
            done = await self._io(lambda: backend.completions.get(topic, job.job_id))
            if done is not None:
                log.info("already %s: acknowledged without running again", done.status, extra=fields)
                return Verdict("ack", attempt, Outcome("done", None, 0.0), already=str(done.status))

        recorder = _Recorder(backend, topic, job.job_id, spec.name) if tracked else None
        try:
            payload, meta = job.decode(spec.name, fifo=spec.fifo)
        except UndecodableJobError as exc:  # the message itself is unusable: retrying cannot help
            outcome = Outcome("dead", exc, 0.0)
        else:
            if meta.group_id is not None:
                fields["group_id"] = meta.group_id
            outcome = await run_handler(
                self.app._handler_info(spec.name),
                payload,
                meta,
                ctx=JobContext(app=self.app, queue=spec.name, user=meta.user),
                timeout=spec.timeout,
                executor=self.executor,
                linger=None if spec.fifo else 0.0,  # a FIFO group never runs two jobs at once
                on_done=recorder,
            )
        if outcome.error is not None:
            backend.record_failure(outcome.error)
        fields["duration_ms"] = round(outcome.duration * 1000, 1)
        if outcome.status == "done":
            if recorder is not None:
                await self._io(recorder.ensure)
            log.debug("job done", extra={**fields, "status": "done"})
            return Verdict("ack", attempt, outcome)
        verdict_error = Verdict("retry", attempt, outcome).error_text
        if outcome.status == "retry" and attempt < spec.max_attempts:
            log.warning(
                "job failed, will retry: %s", verdict_error, extra={**fields, "status": "retry", "error": verdict_error}
            )
            return Verdict("retry", attempt, outcome, delay=spec.backoff(attempt))
        await self._io(
            lambda: backend.publish_dead_letter(
                spec.name, job.job_id, job.data, job.attributes, error=verdict_error, attempts=attempt
            )
        )
        if tracked:
            await self._io(
                lambda: backend.completions.mark(topic, job.job_id, queue=spec.name, status="dead", error=verdict_error)
            )
        log.error("job dead-lettered: %s", verdict_error, extra={**fields, "status": "dead", "error": verdict_error})
        return Verdict("dead", attempt, outcome)


class _Recorder:
    """Writes the "done" record in the handler's own thread the moment it returns (never raises there)."""

    def __init__(self, backend: GcpBackend, topic: str, job_id: str, queue: str) -> None:
        self._backend, self._topic, self._job_id, self._queue = backend, topic, job_id, queue
        self._written = False

    def __call__(self) -> None:
        with contextlib.suppress(Exception):
            self.ensure()

    def ensure(self) -> None:
        if not self._written:
            self._backend.completions.mark(self._topic, self._job_id, queue=self._queue, status="done")
            self._written = True
