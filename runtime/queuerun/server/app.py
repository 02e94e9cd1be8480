"""The push server: an ASGI app (Starlette) that runs jobs Pub/Sub pushes to it.

Routes
    ``POST /_pubsub/{queue}``  one Pub/Sub push request (wrapped envelope) per job
    ``GET /_health``           liveness: 200 with the app name (``/healthz`` is reserved on Cloud Run)
    ``POST /queues/{queue}[/{group}[/{dedupe}]]``  HTTP endpoints of ``http=True`` queues (202 + X-Job-Id)
    ``WS /_ws``                job notifications to the authenticated user's browser (``socket.send``)

A push request goes through, in order: OIDC verification (``QUEUERUN_PUSH_AUTH``: in full, or only
the claims when Cloud Run's IAM layer has verified the signature; off with the insecure setting,
for the emulator, which sends no token), the queue lookup, the body size limit, envelope decoding. Any of
those failing answers a 4xx (401/403, 404, 413, 400) with a JSON ``{"error": ...}`` and never
reaches a handler. Then the job runs through :func:`~queuerun.handlers.run_handler` with the
queue's timeout:

- done: 204 (ack);
- failed or timed out: 500 (nack: Pub/Sub retries with the subscription's backoff), except on the
  last attempt (``received_count >= max_attempts``), where the server publishes the job to the
  dead-letter topic itself, with the error, and acks (Pub/Sub's dead-letter policy stays as a
  backstop, and the emulator cannot combine it with ordering);
- dead (payload does not fit the handler's type, or the message cannot become a job at all, whatever
  the decoder raised; see :meth:`~queuerun.wire.ReceivedJob.decode` for messages other tools
  published): dead-lettered at once with the reason, ack.

``received_count`` is the envelope's ``deliveryAttempt`` (sent when the subscription has a
dead-letter policy), else counted by this process per message id (the emulator never sends it).
On FIFO queues (and on standard queues with ``track_completions``, the default on the emulators) a
completion record is checked before and written after the handler, so a job that completed is
acknowledged without running again when Pub/Sub redelivers it. The record is written in
the handler's own thread the moment it returns (also when a timed-out sync handler finishes late):
a crash can make a completed job run again only inside that one Firestore write. A handler that
must not repeat an effect even then keys it on ``meta.job_id``, which a redelivery keeps.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute

from ..context import JobContext
from ..endpoint import HTTP_PREFIX, AppHttp
from ..errors import ConfigurationError, EnvelopeError, PushAuthError, QueueNotFoundError, UndecodableJobError
from ..handlers import Outcome, run_handler
from ..settings import Settings
from ..wire import ReceivedJob
from .envelope import MAX_PUSH_BODY_BYTES, PushedMessage, decode_push_envelope
from .logs import TRACE_HEADER, trace_fields
from .redelivery import REDELIVERY_HEADER
from .websocket import WEBSOCKET_PATH, websocket_app

if TYPE_CHECKING:
    from ..app import App
    from ..backends.gcp import GcpBackend
    from ..spec import QueueSpec
    from .oidc import PushTokenVerifier
    from .redelivery import RedeliveryWatch

log = logging.getLogger("queuerun.server")

# Production Pub/Sub acks 102, 200, 201, 202 and 204; the emulator acks 102, 200, 201, 203 and 204
# and treats 202 as a nack (measured). 204 is an ack on both.
ACK_STATUS: Final = 204
# Any other status is a nack: the message is redelivered with the subscription's retry policy.
NACK_STATUS: Final = 500  # the handler failed or timed out
UNAVAILABLE_STATUS: Final = 503  # a store we depend on failed: try again later
PUSH_PATH: Final = "/_pubsub/"
HEALTH_PATH: Final = "/_health"
ATTEMPT_CACHE_SIZE: Final = 10_000


class _CompletionRecorder:
    """Writes a job's "done" record the moment its handler returns (``run_handler``'s ``on_done``).

    Called in the handler's thread, it must not raise: a failed write is kept and tried again by
    ``ensure()`` on the request's path, whose error makes the answer a 503.
    """

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


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class AttemptCounter:
    """Deliveries seen per message id in this process, for when Pub/Sub does not count them."""

    def __init__(self, size: int = ATTEMPT_CACHE_SIZE) -> None:
        self._size = size
        self._counts: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()
        self._lock = threading.Lock()

    def seen(self, queue: str, message_id: str) -> int:
        key = (queue, message_id)
        with self._lock:
            count = self._counts.pop(key, 0) + 1
            self._counts[key] = count
            while len(self._counts) > self._size:
                self._counts.popitem(last=False)
            return count

    def current(self, queue: str, message_id: str) -> int | None:
        """Deliveries seen so far, without counting one more."""
        with self._lock:
            return self._counts.get((queue, message_id))

    def forget(self, queue: str, message_id: str) -> None:
        with self._lock:
            self._counts.pop((queue, message_id), None)


class PushServer:
    """Push handling for one App. ``asgi()`` gives the Starlette app; ``dispatch()`` serves any Request."""

    def __init__(
        self,
        app: App,
        settings: Settings | None = None,
        *,
        verifier: PushTokenVerifier | None = None,
        max_body_bytes: int = MAX_PUSH_BODY_BYTES,
        threads: int = 64,
        redelivery: RedeliveryWatch | None = None,
    ) -> None:
        """``redelivery`` follows nacked jobs until Pub/Sub delivers them again (the dev server on the emulator)."""
        self.app = app
        self.redelivery = redelivery
        self.settings = settings or app.settings
        if verifier is None and not self.settings.insecure_push:
            if not (self.settings.push_audience and self.settings.push_service_account):
                raise ConfigurationError(
                    "the push server verifies Pub/Sub's OIDC tokens: set QUEUERUN_PUSH_AUDIENCE and "
                    "QUEUERUN_PUSH_SERVICE_ACCOUNT (or QUEUERUN_INSECURE_PUSH=1 for the emulator, which sends "
                    f"no token); got audience={self.settings.push_audience!r}, "
                    f"service account={self.settings.push_service_account!r}"
                )
            from .oidc import PushTokenVerifier

            verifier = PushTokenVerifier(
                audience=self.settings.push_audience,
                service_account_email=self.settings.push_service_account,
                mode=self.settings.push_auth,
            )
        self.verifier = verifier
        self.max_body_bytes = max_body_bytes
        self.attempts = AttemptCounter()
        self.http = AppHttp(app)
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="queuerun-job")

    # -- the backend (created on first need: importing Google clients costs cold-start time) -----
    @property
    def backend(self) -> GcpBackend:
        from ..backends.gcp import GcpBackend

        backend = self.app.backend
        if not isinstance(backend, GcpBackend):
            raise ConfigurationError(
                f"the push server needs the gcp backend (QUEUERUN_BACKEND=gcp), not {backend.name!r}"
            )
        return backend

    # -- routes ---------------------------------------------------------------------------------
    async def dispatch(self, request: Request) -> Response:
        """Route a request by path: for hosts (functions-framework) that hand over every request."""
        path = request.url.path
        if path.startswith(PUSH_PATH):
            if request.method != "POST":
                return error_response(405, f"{path} accepts POST only, not {request.method}")
            return await self.handle_push(request, path[len(PUSH_PATH) :])
        if path == HEALTH_PATH:
            return await self.health(request)
        if path == HTTP_PREFIX or path.startswith(HTTP_PREFIX + "/"):
            return await self.http.respond(request, path[len(HTTP_PREFIX) :])
        return error_response(404, f"no route for {request.method} {path}")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "app": self.app.name, "queues": [s.name for s in self.app.specs]})

    async def _push_route(self, request: Request) -> Response:
        return await self.handle_push(request, request.path_params["queue"])

    async def handle_push(self, request: Request, queue: str) -> Response:
        trace = trace_fields(request.headers.get(TRACE_HEADER), self.settings.project)
        if self.verifier is not None:
            try:
                await anyio.to_thread.run_sync(self.verifier.verify, request.headers.get("authorization"))
            except PushAuthError as exc:
                log.warning("push rejected: %s", exc, extra={"queue": queue, "http_status": exc.status, **trace})
                return error_response(exc.status, str(exc))
        try:
            spec = self.app.spec(queue)
        except QueueNotFoundError:
            known = ", ".join(s.name for s in self.app.specs) or "none"
            return error_response(404, f"no queue named {queue[:200]!r} in app {self.app.name!r} (declared: {known})")
        body = await self._read_body(request)
        if isinstance(body, Response):
            return body
        try:
            message = decode_push_envelope(body, max_bytes=self.max_body_bytes)
        except EnvelopeError as exc:
            log.warning("bad push request: %s", exc, extra={"queue": queue, "http_status": exc.status, **trace})
            return error_response(exc.status, str(exc))
        watch = self.redelivery
        if watch is not None and not watch.arrived(queue, message.message_id, request.headers.get(REDELIVERY_HEADER)):
            return await self._taken_over(spec, message, trace)
        try:
            return await self._run(spec, message, trace)
        except Exception as exc:  # a store we depend on failed: nack so Pub/Sub delivers it again later
            error = f"{type(exc).__name__}: {exc}"
            fields = {
                "queue": queue,
                "job_id": message.message_id,
                "attempt": message.delivery_attempt or self.attempts.current(queue, message.message_id),
                "status": "unavailable",
                "http_status": UNAVAILABLE_STATUS,
                "error": f"not processed, Pub/Sub will deliver it again: {error}",
                **trace,
            }
            log.exception("could not process job: %s", error, extra=fields)
            if watch is not None:
                watch.nacked(queue, message.message_id, fields["attempt"] or 0)
            return error_response(UNAVAILABLE_STATUS, f"queue {queue!r}: job {message.message_id} not processed: {exc}")
        finally:
            if watch is not None:
                watch.finished(queue, message.message_id)

    async def _taken_over(self, spec: QueueSpec, message: PushedMessage, trace: dict[str, Any]) -> Response:
        """A copy from the emulator of a job the dev server now delivers itself: not run again. On a
        FIFO queue it is acknowledged once the job settled and refused until then, holding the group."""
        fields = {"queue": spec.name, "job_id": message.message_id, **trace}
        if spec.fifo:
            topic = self.backend.topic_path(spec.name)
            if await anyio.to_thread.run_sync(self.backend.completions.get, topic, message.message_id) is None:
                return error_response(
                    409, f"queue {spec.name!r}: job {message.message_id} is being redelivered by the dev server"
                )
        log.info("a late copy of a job the dev server delivered itself: acknowledged", extra=fields)
        return Response(status_code=ACK_STATUS)

    async def _read_body(self, request: Request) -> bytes | Response:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return error_response(413, f"push body is {declared} bytes, over the limit of {limit}")
        if declared.isdigit():
            try:
                return await request.body()  # the common case: one read of a known size
            except ClientDisconnect:
                return error_response(400, "the client disconnected before sending the whole body")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return error_response(413, f"push body is over the limit of {limit} bytes")
        except ClientDisconnect:
            return error_response(400, "the client disconnected before sending the whole body")
        return bytes(body)

    # -- one job --------------------------------------------------------------------------------
    async def _run(self, spec: QueueSpec, message: PushedMessage, trace: dict[str, Any]) -> Response:
        queue = spec.name
        received_count = message.delivery_attempt or self.attempts.seen(queue, message.message_id)
        fields: dict[str, Any] = {"queue": queue, "job_id": message.message_id, "attempt": received_count, **trace}
        tracked = spec.fifo or self._tracking()
        topic = self.backend.topic_path(queue) if tracked else ""
        if tracked:  # FIFO always; standard queues where completions are tracked (the emulators)
            done = await anyio.to_thread.run_sync(self.backend.completions.get, topic, message.message_id)
            if done is not None:
                log.info("already %s: acknowledged without running again", done.status, extra=fields)
                return Response(status_code=ACK_STATUS)

        job = ReceivedJob(
            job_id=message.message_id,
            data=message.data,
            attributes=message.attributes,
            received_count=received_count,
            published_at=message.publish_time,
        )
        recorder = _CompletionRecorder(self.backend, topic, message.message_id, queue) if tracked else None
        try:
            payload, meta = job.decode(queue, fifo=spec.fifo)
        except UndecodableJobError as exc:  # the message itself is unusable: retrying cannot help
            outcome = Outcome("dead", exc, 0.0)
        else:
            fields["group_id"] = meta.group_id
            outcome = await run_handler(
                self.app._handler_info(queue),
                payload,
                meta,
                ctx=JobContext(app=self.app, queue=queue, user=meta.user),
                timeout=spec.timeout,
                executor=self._executor,
                # A timed-out sync FIFO handler's thread cannot be stopped: hold the answer (so Pub/Sub
                # sends nothing more of the group) until it ends, up to just before the ack deadline.
                linger=max(0.0, spec.ack_deadline - spec.timeout - 1) if spec.fifo else 0.0,
                on_done=recorder,
            )
        fields["duration_ms"] = round(outcome.duration * 1000, 1)
        error = "" if outcome.error is None else f"{type(outcome.error).__name__}: {outcome.error}"
        if outcome.error is not None:
            self._report_failure(outcome.error)

        if outcome.status == "done":
            if recorder is not None:
                await anyio.to_thread.run_sync(recorder.ensure)  # a failed write: 503, and the job runs again
            self.attempts.forget(queue, message.message_id)
            # DEBUG: Cloud Run's request log already records every ack; a line per job halves throughput.
            log.debug("job done", extra={**fields, "status": "done"})
            return Response(status_code=ACK_STATUS)

        if outcome.status == "retry" and received_count < spec.max_attempts:
            log.warning("job failed, will retry: %s", error, extra={**fields, "status": "retry", "error": error})
            if self.redelivery is not None:
                self.redelivery.nacked(queue, message.message_id, received_count)
            return error_response(NACK_STATUS, f"queue {queue!r}: job {message.message_id} failed: {error}")

        await anyio.to_thread.run_sync(
            lambda: self.backend.publish_dead_letter(
                queue, message.message_id, message.data, message.attributes, error=error, attempts=received_count
            )
        )
        if tracked:
            await anyio.to_thread.run_sync(
                lambda: self.backend.completions.mark(
                    topic, message.message_id, queue=queue, status="dead", error=error
                )
            )
        self.attempts.forget(queue, message.message_id)
        log.error("job dead-lettered: %s", error, extra={**fields, "status": "dead", "error": error})
        return Response(status_code=ACK_STATUS)

    def _tracking(self) -> bool:
        from ..backends.gcp import GcpBackend

        backend = self.app.backend
        return isinstance(backend, GcpBackend) and backend.track_completions

    def _report_failure(self, error: BaseException) -> None:
        record = getattr(self.app.backend, "record_failure", None)
        if callable(record):
            record(error)

    # -- ASGI -----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # uvicorn has let in-flight requests finish (or the grace period ran out) by now.
            await asyncio.to_thread(self.close)

    def close(self) -> None:
        from ..socket_hub import close_hubs

        close_hubs(self.app)
        self._executor.shutdown(wait=False, cancel_futures=True)
        backend = self.app._backend
        if backend is not None:
            backend.stop()  # flush pushes still batching

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route(PUSH_PATH + "{queue:str}", self._push_route, methods=["POST"]),
                Route(HEALTH_PATH, self.health, methods=["GET"]),
                Mount(HTTP_PREFIX, app=self.http),
                # A Mount would not match the bare path for WebSockets.
                WebSocketRoute(WEBSOCKET_PATH, websocket_app(self.app)),
            ],
            exception_handlers={HTTPException: _http_error},
            lifespan=self.lifespan,
        )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers, as JSON like ours."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return error_response(status, f"{request.method} {request.url.path}: {detail}")


def create_push_app(app: App, settings: Settings | None = None, **options: Any) -> Starlette:
    """The ASGI app serving ``app``'s push subscriptions (see the module docstring)."""
    return PushServer(app, settings, **options).asgi()
