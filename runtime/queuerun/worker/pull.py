"""The pull worker: every ``delivery="pull"`` queue of an app, consumed with streaming pull.

One ``SubscriberClient.subscribe`` per queue, with the library's flow control and lease
management bounded from the spec (:mod:`.plan`). Each message is handed to a scheduler thread
(``concurrency`` of them per queue, the bound on its jobs running at once), which runs one delivery
on the worker's event loop through the shared delivery core (:class:`queuerun.delivery.DeliveryCore`:
decode, handler with its timeout, ack/retry/dead, dead-lettering, completion records, the log
line) and maps its verdict to Pub/Sub:

- ``ack`` and ``dead`` (already dead-lettered by the delivery): ack, through
  ``ack_with_response()`` on exactly-once queues (its failures: :mod:`.acks`);
- ``retry`` on a standard queue: nack, so Pub/Sub redelivers it after the subscription's retry
  policy (min/max backoff from the spec; "RetryPolicy will be triggered on NACKs or acknowledgement
  deadline exceeded events", best effort: the google.pubsub.v1.RetryPolicy reference);
- ``retry`` on a FIFO queue: retried here after the queue's backoff, holding the group. A nack
  would not keep order with streaming pull: the library releases the group's next message as soon
  as the head is settled, and that message would run before the head's retry;
- the delivery raising (a store it needs failed): nack.

At most once per message id, within a process: a delivery of a message id that is still running
here (its lease lapsed, or Pub/Sub redelivered it) waits for the first, then finds its completion
record. Across processes, Pub/Sub's exactly-once delivery does not redeliver an outstanding
message, and the completion record covers a failed acknowledgement.

Shutdown (:meth:`PullWorker.stop`, SIGTERM in :func:`run_worker`): the streams are cancelled at once
(no more messages); the library nacks messages leased but not started; running jobs get ``grace``
seconds to finish and be acked; the ones still running are then nacked, so another instance gets
them at once instead of after the lease runs out (on the emulator they are left to Pub/Sub instead:
a gap named in :meth:`PullWorker.stop`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Literal

from ..delivery import DeliveryCore, Verdict
from ..errors import ConfigurationError
from ..names import subscription_id
from ..wire import ReceivedJob
from .acks import ack_failure
from .plan import SHUTDOWN_GRACE, PullPlan, pull_plan

if TYPE_CHECKING:
    from ..app import App
    from ..backends.gcp import GcpBackend
    from ..spec import QueueSpec

log = logging.getLogger("queuerun.worker")

ACK_WAIT: Final = 60.0  # an exactly-once ack's answer (the library retries transient errors inside it)
ATTEMPTS_KEPT: Final = 10_000
FLUSH_WAIT: Final = 1.0  # after the grace period: for the library to send the last nacks (Cloud Run allows 10 s)


def pull_specs(app: App, queues: Iterable[str] | None = None) -> list[QueueSpec]:
    """The queues a worker consumes: every pull queue of ``app``, or the named ones (which must be pull)."""
    if queues is None:
        specs = [s for s in app.specs if s.delivery == "pull"]
        if not specs:
            raise ConfigurationError(
                f"app {app.name!r} has no queue with delivery='pull' for the worker to consume "
                f"(declared: {', '.join(s.name for s in app.specs) or 'none'})"
            )
        return specs
    specs = [app.spec(name) for name in queues]
    push = [s.name for s in specs if s.delivery != "pull"]
    if push:
        raise ConfigurationError(
            f"queue {push[0]!r}: delivery is 'push' (Pub/Sub pushes its jobs to the service); "
            "the worker consumes delivery='pull' queues only"
        )
    return specs


class _Attempts:
    """Deliveries seen per message id here, for subscriptions that do not count them (no dead-letter policy)."""

    def __init__(self) -> None:
        self._counts: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._lock = threading.Lock()

    def seen(self, key: str) -> int:
        with self._lock:
            count = self._counts.pop(key, 0) + 1
            self._counts[key] = count
            while len(self._counts) > ATTEMPTS_KEPT:
                self._counts.popitem(last=False)
            return count

    def forget(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)


class PullWorker:
    """Consumes ``app``'s pull queues until :meth:`stop`. ``start()`` returns at once."""

    def __init__(
        self,
        app: App,
        *,
        queues: Iterable[str] | None = None,
        grace: float = SHUTDOWN_GRACE,
        subscriber: Any = None,
    ) -> None:
        from ..backends.gcp import GcpBackend

        self.app = app
        self.specs = pull_specs(app, queues)
        backend = app.backend
        if not isinstance(backend, GcpBackend):
            raise ConfigurationError(
                f"the pull worker needs the gcp backend (QUEUERUN_BACKEND=gcp), not {backend.name!r}: "
                "on the embedded backend the app's own workers run pull queues"
            )
        self.backend: GcpBackend = backend
        backend.bind(app)
        self.grace = grace
        self._emulator = bool(app.settings.pubsub_emulator_host)
        self._subscriber = subscriber
        runners = sum(s.concurrency for s in self.specs)
        self._executor = concurrent.futures.ThreadPoolExecutor(runners + 4, thread_name_prefix="queuerun-job")
        # The one delivery core every transport shares; a timed-out sync FIFO handler is waited for
        # (the library keeps extending the lease meanwhile), so a group never runs two jobs at once.
        self._core = DeliveryCore(app, backend, executor=self._executor, logger=log, done_level=logging.DEBUG)
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="queuerun-worker-loop", daemon=True)
        self._streams: list[Any] = []
        self._stopping = threading.Event()
        self._stop_waiters: asyncio.Event | None = None
        self._attempts = _Attempts()
        self._running: dict[tuple[str, str], asyncio.Future[None]] = {}  # (queue, message id), on the loop
        self._inflight: dict[int, tuple[str, Any]] = {}  # id(message) -> (subscription, message) while it runs
        self._inflight_lock = threading.Lock()
        self._inflight_done = threading.Condition(self._inflight_lock)

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def subscriber(self) -> Any:
        if self._subscriber is None:
            self._subscriber = self.backend.subscriber
        return self._subscriber

    def start(self) -> PullWorker:
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler
        from google.cloud.pubsub_v1.types import FlowControl

        self._loop_thread.start()
        self._stop_waiters = asyncio.run_coroutine_threadsafe(_event(), self._loop).result()
        for spec in self.specs:
            plan = pull_plan(spec)
            path = f"projects/{self.backend.project}/subscriptions/{subscription_id(self.app.name, spec.name)}"
            threads = concurrent.futures.ThreadPoolExecutor(plan.runners, thread_name_prefix=f"queuerun-{spec.name}")
            stream = self.subscriber.subscribe(
                path,
                callback=lambda message, spec=spec, plan=plan, path=path: self._on_message(spec, plan, path, message),
                flow_control=FlowControl(max_messages=plan.max_messages, max_lease_duration=plan.max_lease_duration),
                scheduler=ThreadScheduler(threads),
                # On cancel, the library waits for running callbacks (they ack or nack) before it stops
                # its dispatcher, and nacks the messages it leased but never started.
                await_callbacks_on_shutdown=True,
            )
            self._streams.append(stream)
            log.info(
                "pulling %s: %d at once, up to %d leased, leases held up to %gs",
                path,
                plan.runners,
                plan.max_messages,
                plan.max_lease_duration,
                extra={"queue": spec.name},
            )
        return self

    def stop(self, grace: float | None = None) -> int:
        """Stop pulling; let running jobs finish for ``grace`` seconds, then nack the rest (returns how many).

        Cancelling a stream closes it at once (no more messages) while the library keeps its
        dispatcher for the callbacks still running (``await_callbacks_on_shutdown``): their acks
        and nacks still go out. Nacks of jobs cut off go to a closed stream's subscription, so
        Pub/Sub hands them to another instance, not back to this one.
        """
        if self._stopping.is_set():
            return 0
        self._stopping.set()
        wait = self.grace if grace is None else grace
        if self._stop_waiters is not None:
            self._loop.call_soon_threadsafe(self._stop_waiters.set)  # FIFO retries waiting out a backoff
        for stream in self._streams:
            stream.cancel()  # the library also nacks what it leased and never started
        with self._inflight_done:
            self._inflight_done.wait_for(lambda: not self._inflight, timeout=wait)
            left = list(self._inflight.values())
        for path, message in left:
            if self._emulator:
                # Emulator gap (measured): a message nacked after its stream closed is never handed to
                # another stream when the subscription has a dead-letter policy; left alone, it is
                # handed out again a few seconds after the stream closed. Production takes the nack.
                log.warning(
                    "shutting down: job still running after %gs, left to Pub/Sub (emulator: not nacked)",
                    wait,
                    extra={"job_id": message.message_id, "status": "released"},
                )
                continue
            message.nack()  # out of the library's lease management, and a nack through its dispatcher
            try:  # ... and one RPC of our own, confirmed before the process may exit
                self.subscriber.modify_ack_deadline(subscription=path, ack_ids=[message.ack_id], ack_deadline_seconds=0)
            except Exception as exc:  # its lease still runs out, then Pub/Sub delivers it again
                log.warning("nack of job %s not confirmed: %s", message.message_id, exc)
            log.warning(
                "shutting down: job still running after %gs, nacked for another instance",
                wait,
                extra={"job_id": message.message_id, "status": "nacked"},
            )
        if left:  # their callbacks return once their deliveries are cancelled
            self._loop.call_soon_threadsafe(_cancel_all, self._loop)
        flush = time.monotonic() + FLUSH_WAIT
        for stream in self._streams:  # the library's shutdown ends once the callbacks have returned
            with contextlib.suppress(Exception):
                stream.result(timeout=max(0.0, flush - time.monotonic()))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._executor.shutdown(wait=False, cancel_futures=True)
        return len(left)

    def __enter__(self) -> PullWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one message -------------------------------------------------------------------------------
    def _on_message(self, spec: QueueSpec, plan: PullPlan, path: str, message: Any) -> None:
        """In a scheduler thread: run the delivery to its end, then ack or nack."""
        if self._stopping.is_set():
            message.nack()
            return
        with self._inflight_lock:
            self._inflight[id(message)] = (path, message)
        try:
            running = asyncio.run_coroutine_threadsafe(self._settle(spec, plan, message), self._loop)
            action = running.result()
            # Settled here, in this callback's own thread: an exactly-once ack waits for Pub/Sub's answer.
            if action == "nack":
                message.nack()
            elif spec.exactly_once:
                self._ack_exactly_once(spec, message)
            else:
                message.ack()
        except BaseException as exc:  # never lose a message silently: Pub/Sub delivers it again
            if not self._stopping.is_set():
                log.exception(
                    "could not process job, nacked: %s",
                    exc,
                    extra={"queue": spec.name, "job_id": message.message_id, "status": "unavailable"},
                )
                message.nack()
            elif not self._emulator:  # cut off by stop(), which nacked it already; once more costs nothing
                message.nack()
        finally:
            with self._inflight_done:
                self._inflight.pop(id(message), None)
                self._inflight_done.notify_all()

    async def _settle(self, spec: QueueSpec, plan: PullPlan, message: Any) -> Literal["ack", "nack"]:
        key = (spec.name, str(message.message_id))
        earlier = self._running.get(key)
        while earlier is not None:  # the same message is running here: never run it twice at once
            await asyncio.shield(earlier)
            earlier = self._running.get(key)
        mine: asyncio.Future[None] = self._loop.create_future()
        self._running[key] = mine
        try:
            verdict = await self._attempt(spec, plan, message)
        finally:
            del self._running[key]
            mine.set_result(None)
        if verdict.action == "retry":
            return "nack"
        self._attempts.forget(f"{spec.name}/{message.message_id}")
        return "ack"  # done, or dead-lettered already

    async def _attempt(self, spec: QueueSpec, plan: PullPlan, message: Any) -> Verdict:
        """Deliveries of ``message`` until one is settled (FIFO: retried here; standard: one)."""
        attempt = message.delivery_attempt or self._attempts.seen(f"{spec.name}/{message.message_id}")
        while True:
            verdict = await self._deliver(spec, self._job(message, attempt))
            if verdict.action != "retry" or not plan.retry_in_process or self._stopping.is_set():
                return verdict
            assert self._stop_waiters is not None
            try:  # the backoff, cut short by shutdown (then the job is nacked)
                await asyncio.wait_for(self._stop_waiters.wait(), verdict.delay)
                return verdict
            except TimeoutError:
                attempt += 1

    async def _deliver(self, spec: QueueSpec, job: ReceivedJob) -> Verdict:
        """Run one delivery and get the decision: the single call into the consume side."""
        return await self._core.deliver(spec, job)

    @staticmethod
    def _job(message: Any, attempt: int) -> ReceivedJob:
        return ReceivedJob(
            job_id=str(message.message_id),
            data=bytes(message.data),
            attributes=dict(message.attributes),
            received_count=attempt,
            published_at=message.publish_time,
        )

    def _ack_exactly_once(self, spec: QueueSpec, message: Any) -> None:
        from google.cloud.pubsub_v1.subscriber.exceptions import AcknowledgeError

        try:
            message.ack_with_response().result(timeout=ACK_WAIT)
        except AcknowledgeError as exc:
            failure = ack_failure(exc.error_code.name)
            log.log(
                failure.level,
                "acknowledgement refused (%s): %s",
                exc.error_code.name,
                failure.meaning,
                extra={"queue": spec.name, "job_id": message.message_id, "status": "ack-failed"},
            )
        except concurrent.futures.TimeoutError:
            log.error(
                "acknowledgement not confirmed within %gs: Pub/Sub may deliver the job again (its completion "
                "record makes that delivery an ack)",
                ACK_WAIT,
                extra={"queue": spec.name, "job_id": message.message_id, "status": "ack-failed"},
            )


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


async def _event() -> asyncio.Event:
    return asyncio.Event()


def run_worker(app: App, *, queues: Iterable[str] | None = None, grace: float = SHUTDOWN_GRACE) -> None:
    """``queuerun worker``: consume until SIGTERM or SIGINT, then shut down within ``grace`` seconds."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("%s: stopping (%gs for running jobs)", signal.Signals(signum).name, grace)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker = PullWorker(app, queues=queues, grace=grace).start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        abandoned = worker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if abandoned:
        # A sync handler's thread cannot be stopped, and Python waits for it at exit: past the grace
        # period, its job is nacked already, so leave now rather than be killed mid-write.
        log.warning("exiting with %d job(s) still running, handed back to Pub/Sub", abandoned)
        app.backend.stop()
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
