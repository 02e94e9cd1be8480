"""The push server: an ASGI app (Starlette) that runs jobs Pub/Sub pushes to it.

Routes
    ``POST /_pubsub/{queue}``  one Pub/Sub push request (wrapped envelope) per job
    ``GET /_health``           liveness: 200 ``{"status": "ok"}``, nothing else (``/healthz``: reserved by Cloud Run)
    ``POST /queues/{queue}[/{group}[/{dedupe}]]``  HTTP endpoints of ``http=True`` queues (202 + X-Job-Id)
    ``WS /_ws``                job notifications to the authenticated user's browser (``socket.send``)

A push request goes through, in order: OIDC verification (``QUEUERUN_PUSH_AUTH``: in full, or only
the claims when Cloud Run's IAM layer has verified the signature; off with the insecure setting,
for the emulator, which sends no token), the queue lookup, the body size limit, envelope decoding. Any of
those failing answers a 4xx (401/403, 404, 413, 400) with a JSON ``{"error": ...}`` and never
reaches a handler. Then the queue's ``concurrency`` is checked: with that many of its jobs running
in this process, the request waits briefly for one to finish, then answers 429 (a nack, so Pub/Sub
slows down and delivers it again later). Then the job runs through
:class:`~queuerun.delivery.DeliveryCore` (the code every transport shares), whose verdict maps to:

- ack (done, or completed before): 204;
- retry (failed or timed out, attempts left): 500 (nack: Pub/Sub retries with the subscription's
  backoff);
- dead (``Reject``, a payload that does not fit the handler's type, a message that cannot become a
  job at all, or the last attempt, ``received_count >= max_attempts``): the core has published it
  to the dead-letter topic itself, with the error and traceback: 204. Pub/Sub's dead-letter policy
  stays as a backstop (and the emulator cannot combine it with ordering).

``received_count`` is the envelope's ``deliveryAttempt`` (sent when the subscription has a
dead-letter policy), else counted by this process per message id (the emulator never sends it).
On FIFO queues a completion record is checked before and written after the handler, so a job that
completed is acknowledged without running again when Pub/Sub redelivers it. The record is written in
the handler's own thread the moment it returns (also when a timed-out sync handler finishes late):
a crash can make a completed job run again only inside that one Firestore write. A handler that
must not repeat an effect even then keys it on ``meta.job_id``, which a redelivery keeps.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute

from ..delivery import DeliveryCore
from ..endpoint import HTTP_PREFIX, AppHttp
from ..errors import ConfigurationError, EnvelopeError, PushAuthError, QueueNotFoundError
from ..hosting import check_insecure_push
from ..settings import Settings
from ..topology import PUSH_PATH
from ..user_seal import admitted as admit_user
from ..user_seal import user_seal
from ..wire import ReceivedJob
from .envelope import MAX_PUSH_BODY_BYTES, PushedMessage, decode_push_envelope
from .logs import TRACE_HEADER, trace_fields
from .oidc import push_authorization
from .redelivery import REDELIVERY_HEADER
from .websocket import WEBSOCKET_PATH, websocket_app

if TYPE_CHECKING:
    from ..app import App
    from ..backends.base import Backend
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
# The queue already runs `concurrency` jobs here. Any status but an ack is a nack ("a non-success
# response indicates that Pub/Sub must resend the messages"), and Pub/Sub "dynamically adjusts the
# rate of push requests based on the rate at which it receives success responses"
# (cloud.google.com/pubsub/docs/push, push subscription workflow): 429 (Too Many Requests) says why.
SATURATED_STATUS: Final = 429
# How long a push waits for a slot of its queue before answering 429. The ack deadline leaves the
# server ACK_DEADLINE_MARGIN (10 s) beyond the handler's timeout: waiting stays well inside it.
SLOT_WAIT: Final = 5.0
HEALTH_PATH: Final = "/_health"
_slot_waited: contextvars.ContextVar[float] = contextvars.ContextVar("queuerun_slot_waited", default=0.0)
ATTEMPT_CACHE_SIZE: Final = 10_000


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


class QueueSlots:
    """At most ``concurrency`` jobs of each queue running at once in this process (one event loop)."""

    def __init__(self) -> None:
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def acquire(self, spec: QueueSpec, wait: float) -> bool:
        slots = self._slots.get(spec.name)
        if slots is None:
            slots = self._slots[spec.name] = asyncio.Semaphore(spec.concurrency)
        if not slots.locked():
            await slots.acquire()  # a free slot: taken without yielding
            return True
        try:
            await asyncio.wait_for(slots.acquire(), wait)
        except TimeoutError:
            return False
        return True

    def release(self, spec: QueueSpec) -> None:
        self._slots[spec.name].release()


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
        """``redelivery``: the dev server's watch on deliveries (see :mod:`.redelivery`), emulator only."""
        self.app = app
        self.redelivery = redelivery
        self.settings = settings or app.settings
        if verifier is None:
            check_insecure_push(self.settings)  # reads the process environment, not the settings mapping
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
        self.user_seal = user_seal(self.settings.user_key, app.name)
        self.max_body_bytes = max_body_bytes
        self.attempts = AttemptCounter()
        self.http = AppHttp(app)
        self.slots = QueueSlots()
        self.slot_wait = SLOT_WAIT
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="queuerun-job")
        self._core: DeliveryCore | None = None

    # -- the backend (created on first need: importing Google clients costs cold-start time) -----
    @property
    def backend(self) -> Backend:
        """The app's backend. One without ``external_delivery`` (embedded) runs pushed jobs but refuses
        to dead-letter them (they are not its own), so a test can serve pushes without Google clients."""
        return self.app.backend

    @property
    def core(self) -> DeliveryCore:
        if self._core is None:
            self._core = DeliveryCore(
                self.app,
                self.backend,
                executor=self._executor,
                # A timed-out sync FIFO handler's thread cannot be stopped: hold the answer (so Pub/Sub
                # sends nothing more of the group) until it ends, up to just before the ack deadline.
                # Less the time the push waited for a slot: the answer must still beat the ack deadline.
                fifo_linger=lambda spec: max(0.0, spec.ack_deadline - spec.timeout - 1 - _slot_waited.get()),
                logger=log,
                # DEBUG: Cloud Run's request log already records every ack; a line per job halves throughput.
                done_level=logging.DEBUG,
                trace_retries=True,  # every failure reaches Error Reporting with its stack trace
            )
        return self._core

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
        return JSONResponse({"status": "ok"})  # anyone may ask: nothing about the app, its queues or project

    async def _push_route(self, request: Request) -> Response:
        return await self.handle_push(request, request.path_params["queue"])

    async def handle_push(self, request: Request, queue: str) -> Response:
        trace = trace_fields(request.headers.get(TRACE_HEADER), self.settings.project)
        if self.verifier is not None:
            try:
                authorization = push_authorization(request.headers)  # one header, before any cache lookup
                if self.verifier.cached(authorization) is None:
                    await anyio.to_thread.run_sync(self.verifier.verify, authorization)
            except PushAuthError as exc:
                log.warning("push rejected: %s", exc, extra={"queue": queue, "http_status": exc.status, **trace})
                return error_response(exc.status, exc.public)  # names no audience or account
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
            # The cause is logged above; it may name topic paths, which the caller need not learn.
            return error_response(UNAVAILABLE_STATUS, f"queue {queue!r}: job {message.message_id} not processed")
        finally:
            if watch is not None:
                watch.finished(queue, message.message_id)

    async def _taken_over(self, spec: QueueSpec, message: PushedMessage, trace: dict[str, Any]) -> Response:
        """A copy from the emulator of a job the dev server now delivers itself: not run again. On a
        FIFO queue it is acknowledged once the job settled and refused until then, holding the group."""
        fields = {"queue": spec.name, "job_id": message.message_id, **trace}
        if spec.fifo:
            status = await anyio.to_thread.run_sync(self.backend.completion_status, spec, message.message_id)
            if status is None:
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
        # Every push is a delivery attempt, also one turned away below: Pub/Sub counts it too.
        received_count = message.delivery_attempt or self.attempts.seen(queue, message.message_id)
        waiting_since = time.monotonic()
        admitted = await self.slots.acquire(spec, self.slot_wait)
        _slot_waited.set(time.monotonic() - waiting_since)
        if not admitted:
            fields = {"queue": queue, "job_id": message.message_id, "attempt": received_count, "status": "busy"}
            log.info(
                "not started: %d job(s) of the queue already running here, Pub/Sub will deliver it again",
                spec.concurrency,
                extra={**fields, "http_status": SATURATED_STATUS, **trace},
            )
            if self.redelivery is not None:
                self.redelivery.nacked(queue, message.message_id, received_count)
            return error_response(
                SATURATED_STATUS,
                f"queue {queue!r}: {spec.concurrency} job(s) already running here (concurrency={spec.concurrency}); "
                f"job {message.message_id} not started",
            )
        try:
            return await self._deliver(spec, message, received_count, trace)
        finally:
            self.slots.release(spec)

    async def _deliver(
        self, spec: QueueSpec, message: PushedMessage, received_count: int, trace: dict[str, Any]
    ) -> Response:
        queue = spec.name
        job = ReceivedJob(
            job_id=message.message_id,
            data=message.data,
            # a user is believed only under the app's seal: anyone who may publish can write attributes
            attributes=admit_user(
                self.user_seal, message.attributes, message.data, queue=queue, job_id=message.message_id
            ),
            received_count=received_count,
            published_at=message.publish_time,
        )
        verdict = await self.core.deliver(spec, job, fields=trace)
        if verdict.action == "retry":
            if self.redelivery is not None:
                self.redelivery.nacked(queue, message.message_id, received_count)
            return error_response(
                NACK_STATUS, f"queue {queue!r}: job {message.message_id} failed: {verdict.error_text}"
            )
        self.attempts.forget(queue, message.message_id)
        return Response(status_code=ACK_STATUS)

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
