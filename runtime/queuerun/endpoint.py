"""Queues as HTTP endpoints (``http=True``): POST a body, get 202 and ``X-Job-Id``.

Routes, relative to where the endpoint is mounted (the Cloud Run server mounts every HTTP queue
under ``/queues/<queue name>``):

    standard queue   POST /                      -> one job
    FIFO queue       POST /<group>               -> one job in that group
                     POST /<group>/<dedupe id>   -> deduplicated on that id

The core (``handle``) is plain async code over :class:`HttpRequest`; thin adapters serve it as ASGI
(Starlette, FastAPI, uvicorn) and as a Flask view.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import parse_qsl, unquote_to_bytes

from .body_budget import BODIES
from .context import current_user
from .errors import (
    AuthenticationError,
    AuthenticationHookError,
    ConfigurationError,
    PayloadError,
    PayloadTooLargeError,
    PayloadValidationError,
    PushError,
    QueueNotFoundError,
    RequestRejected,
)
from .forms import parse_body
from .hosting import anonymous_allowed
from .invoker import cloud_run_invoker, iam_checked
from .limits import MAX_USER_ID_BYTES, id_problem

if TYPE_CHECKING:
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse

    from .app import App
    from .queue import Queue

log = logging.getLogger("queuerun.http")

HTTP_PREFIX = "/queues"  # where the Cloud Run server and the dev server mount every HTTP queue
DEFAULT_MAX_BODY = 5 * 1024 * 1024
MAX_BODY_CEILING = 9 * 1024 * 1024  # leaves room for attributes under Pub/Sub's 10 MB message limit
# Bodies up to this size are parsed on the event loop: a thread hop costs more than parsing them,
# and the limits in queuerun.limits bound the cost of any body accepted.
PARSE_INLINE_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class HttpRequest:
    """What the endpoint and the ``authenticate`` hook see of a request, whatever the framework."""

    method: str
    path: str
    headers: Mapping[str, str]  # lowercase names
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    client: str | None = None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(self.body).encode("utf-8")


def _reject(status: int, message: str, **headers: str) -> HttpResponse:
    return HttpResponse(status, {"error": message}, headers)


async def authenticate(app: App, request: HttpRequest) -> str | None:
    """The request's user id, None for anonymous. AuthenticationError passes through.

    The app's hook decides; where it finds no user and Cloud Run's invoker check admitted the request
    (an IAM-protected service), the user is the invoker's verified email (see :mod:`queuerun.invoker`).
    A sync hook runs in a worker thread: it may block (a token check over the network) while the
    event loop serves other requests, push deliveries included.
    """
    user: str | None = None
    hook = app.authenticate
    if hook is not None:
        result: object
        if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__):
            result = await cast(Awaitable[object], hook(request))
        else:
            result = await asyncio.to_thread(hook, request)
            if inspect.isawaitable(result):
                result = await result
        if result is not None and not isinstance(result, str):
            # The value may be anything the app holds (a session, a record): its type only, in the log only.
            raise AuthenticationHookError(
                f"app {app.name!r}: authenticate must return a user id string or None, got a {type(result).__name__}"
            )
        if result is not None:
            # A user id is a Pub/Sub attribute and an indexed Firestore field: see limits.MAX_USER_ID_BYTES.
            problem = id_problem("the user id authenticate returned", result, max_bytes=MAX_USER_ID_BYTES, show=False)
            if problem is not None:
                raise AuthenticationHookError(f"app {app.name!r}: {problem}")
        user = result
    if user is None and iam_checked(app.settings):
        user = cloud_run_invoker(request.headers)
    return user


def anonymous_refused(queue: str) -> HttpResponse:
    return _reject(
        401,
        f"queue {queue!r} is not public: sign in (the app's authenticate hook found no user), "
        "or declare the queue public=True",
        **{"www-authenticate": "Bearer"},
    )


async def handle(
    queue: Queue, request: HttpRequest, segments: list[str], *, allow_anonymous: bool = False
) -> HttpResponse:
    """Queue one job from a request. Never raises: every failure is a response with a clear message.

    An anonymous request (no hook, or the hook returned None) reaches only a queue declared
    ``public=True``, unless ``allow_anonymous`` (development: see :mod:`queuerun.hosting`).
    """
    spec = queue.spec
    if len(segments) > (2 if spec.fifo else 0):
        return _reject(404, f"queue {spec.name!r}: no such route {request.path!r}")
    if request.method != "POST":
        return _reject(405, f"queue {spec.name!r}: use POST, not {request.method}", allow="POST")
    if spec.fifo and not segments:
        return _reject(400, f"queue {spec.name!r} is FIFO: POST to <route>/<group>[/<dedupe id>] (group is missing)")
    try:
        user = await authenticate(queue.app, request)
        if user is None and not spec.public and not allow_anonymous:
            return anonymous_refused(spec.name)
        content_type = request.headers.get("content-type")
        if len(request.body) <= PARSE_INLINE_BYTES:
            payload = parse_body(spec.name, content_type, request.body, spec.accepts)
        else:  # off the loop: other requests, push deliveries included, go on meanwhile
            payload = await asyncio.to_thread(parse_body, spec.name, content_type, request.body, spec.accepts)
        ref = queue
        params = dict(request.query)
        if segments:
            ref = ref.group(segments[0])
            params["group"] = segments[0]
        if len(segments) == 2:
            ref = ref.dedupe(segments[1])
            params["dedupe"] = segments[1]
        token = current_user.set(user)
        try:
            job_id = await ref.apush(payload, params=params, user=user)
        finally:
            current_user.reset(token)
    except AuthenticationError as exc:
        return _reject(exc.status, str(exc), **({"www-authenticate": "Bearer"} if exc.status == 401 else {}))
    except AuthenticationHookError as exc:  # the app's fault: a server error, and the client learns nothing
        log.error("queue %s: %s", spec.name, exc)
        return _reject(500, f"queue {spec.name!r}: internal error, the job was not queued")
    except RequestRejected as exc:
        return _reject(exc.status, str(exc))
    except PayloadValidationError as exc:  # a typed queue validates at the door: nothing is queued
        return _reject(422, str(exc))
    except PayloadTooLargeError as exc:
        return _reject(413, str(exc))
    except PayloadError as exc:
        return _reject(400, str(exc))
    except ConfigurationError as exc:
        return _reject(400, str(exc))
    except (PushError, QueueNotFoundError) as exc:  # QueueNotFoundError here: the topic is missing
        # The cause goes to the log only: it can name the project, topic paths or accounts.
        log.warning("queue %s: push failed: %s", spec.name, exc)
        return _reject(503, f"queue {spec.name!r}: the job was not queued, try again", **{"retry-after": "1"})
    except Exception:  # a fault of ours or of a store: the client may retry, and must not see a 500
        log.exception("queue %s: could not queue the job", spec.name)
        return _reject(503, f"queue {spec.name!r}: the job was not queued, try again", **{"retry-after": "1"})
    return HttpResponse(202, {"job_id": job_id, "queue": spec.name}, {"x-job-id": job_id})


# -- ASGI ---------------------------------------------------------------------------------------


class ClientGone(Exception):
    """The client disconnected before sending the whole body: nothing is queued."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` bytes (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_response(send: Send, response: HttpResponse) -> None:
    body = response.encoded()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Headers whose second copy could make two readers disagree on who is calling: refused, never picked from.
SINGLE_HEADERS: Final = {"authorization": "Authorization", "x-serverless-authorization": "X-Serverless-Authorization"}


def header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers as one value per lowercase name, resolved the same way for every reader.

    Two ``Authorization`` (or ``X-Serverless-Authorization``) headers are refused (RequestRejected 400):
    the hook, Cloud Run and a framework could each take a different one. Several ``Cookie`` headers
    are joined with ``"; "``, as HTTP/2 requires of a split cookie header (RFC 9113, 8.2.3). For any
    other name the last value is kept.
    """
    headers: dict[str, str] = {}
    for raw_name, value in pairs:
        name = raw_name.lower()
        if name in headers and name in SINGLE_HEADERS:
            raise RequestRejected(400, f"the request has more than one {SINGLE_HEADERS[name]} header: send one")
        if name in headers and name == "cookie":
            value = f"{headers[name]}; {value}"
        headers[name] = value
    return headers


def scope_request(scope: Scope, body: bytes, path: str) -> HttpRequest:
    """The request as the hook sees it. Raises RequestRejected 400 for duplicate credentials (:func:`header_map`)."""
    headers = header_map((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", []))
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    client = scope.get("client")
    return HttpRequest(
        method=scope.get("method", "GET").upper(),
        path=path,
        headers=headers,
        query=query,
        body=body,
        client=f"{client[0]}:{client[1]}" if client else None,
    )


def query_problem(scope: Scope) -> str | None:
    """Why the query string cannot become params: a name or value not UTF-8 once percent-decoded.

    The lenient decoding turns every invalid byte into U+FFFD, so ``?ref=%FF`` and ``?ref=%FE``
    would reach ``meta.params`` as the same value.
    """
    raw: bytes = scope.get("query_string", b"")
    if raw.isascii() and b"%" not in raw:
        return None
    # latin-1 both ways keeps every byte as it came; the strict UTF-8 decode then judges it.
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="latin-1"):
        for text in (name, value):
            try:
                text.encode("latin-1").decode("utf-8")
            except UnicodeDecodeError:
                return f"query parameter {name[:40]!r} is not valid UTF-8 once percent-decoded"
    return None


def raw_path_problem(raw_uri: str) -> str | None:
    """For hosts that route on the decoded path (Flask): what that decoding would split or merge.

    werkzeug decodes ``a%2Fb`` to ``a/b`` before matching ``<group>``, and invalid UTF-8 to U+FFFD,
    so the view cannot get such ids back: refuse them rather than queue under another id.
    """
    path = raw_uri.partition("?")[0]
    if "%2f" in path.lower():
        return "an encoded '/' (%2F) in a path segment cannot be routed here (Flask decodes it before routing)"
    for segment in path.split("/"):
        try:
            unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError:
            return f"path segment {segment[:60]!r} is not valid UTF-8 once percent-decoded"
    return None


def relative_path(scope: Scope) -> str:
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):  # mounted: Starlette keeps the full path and sets root_path
        path = path[len(root) :]
    return path or "/"


def split_segments(path: str) -> list[str]:
    """Segments of an already decoded path (no second percent-decoding: ``%252F`` stays ``%2F``)."""
    return path.strip("/").split("/") if path.strip("/") else []


def path_segments(scope: Scope, below: str | None = None) -> list[str]:
    """Segments of the request path below the mount point, each percent-decoded exactly once.

    Servers decode ``path`` already, so ``a%2Fb`` arrives there as ``a/b``: split that and one
    group id becomes two segments. The raw path (``raw_path``, set by uvicorn, hypercorn and
    Starlette's test client) is split first and each segment decoded after, as UTF-8, strictly:
    ``%FF`` and ``%FE`` must not both become U+FFFD and name the same group. ``below`` is the
    decoded prefix to drop (the mount point; default ``root_path``). Raises RequestRejected (400).
    """
    prefix = scope.get("root_path", "") if below is None else below
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes | bytearray):
        decoded: str = scope.get("path", "/")
        return split_segments(decoded[len(prefix) :] if decoded.startswith(prefix) else decoded)
    parts = bytes(raw).partition(b"?")[0].split(b"/")
    skip = len(prefix.rstrip("/").split("/")) if prefix.strip("/") else 1  # "" before the first "/", then the mount
    mount = "/".join(unquote_to_bytes(p).decode("utf-8", "replace") for p in parts[:skip])
    if mount != prefix.rstrip("/"):
        # The mount point holds an encoded "/" or the server rewrote the path: trust its decoding.
        decoded = scope.get("path", "/")
        return split_segments(decoded[len(prefix) :] if decoded.startswith(prefix) else decoded)
    segments: list[str] = []
    for part in parts[skip:]:
        try:
            segments.append(unquote_to_bytes(part).decode("utf-8"))
        except UnicodeDecodeError:
            shown = part.decode("latin-1")[:60]
            raise RequestRejected(400, f"path segment {shown!r} is not valid UTF-8 once percent-decoded") from None
    return _strip_empty(segments)


def _strip_empty(segments: list[str]) -> list[str]:
    """Drop empty segments at either end (``/q/g/`` is ``/q/g``), keeping decoded "/" inside segments."""
    start, end = 0, len(segments)
    while start < end and not segments[start]:
        start += 1
    while end > start and not segments[end - 1]:
        end -= 1
    return segments[start:end]


async def serve_asgi(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    find: Callable[[list[str]], tuple[Queue, list[str]] | HttpResponse],
    max_body: int,
    allow_anonymous: bool = False,
) -> None:
    """Shared ASGI plumbing: resolve the queue, bound the body, call :func:`handle`."""
    path = relative_path(scope)
    try:
        found = find(path_segments(scope))
    except RequestRejected as exc:
        found = _reject(exc.status, str(exc))
    if isinstance(found, HttpResponse):
        await send_response(send, found)
        return
    queue, segments = found
    problem = query_problem(scope)
    if problem is not None:
        await send_response(send, _reject(400, f"queue {queue.name!r}: {problem}"))
        return
    declared = scope.get("headers", [])
    length = next((v for k, v in declared if k.lower() == b"content-length"), None)
    if length is not None and length.isdigit() and int(length) > max_body:
        await send_response(send, _too_large(queue.name, max_body))
        return
    # Held from before the body is read until it is answered: the body's memory lives that long.
    async with BODIES.reserve(int(length) if length is not None and length.isdigit() else max_body):
        try:
            body = await read_body(receive, max_body)
        except ClientGone:
            return  # a truncated body must not become a job, and there is no one left to answer
        if body is None:
            await send_response(send, _too_large(queue.name, max_body))
            return
        try:
            request = scope_request(scope, body, path)
        except RequestRejected as exc:
            response = _reject(exc.status, f"queue {queue.name!r}: {exc}")
        else:
            response = await handle(queue, request, segments, allow_anonymous=allow_anonymous)
        del body  # the reservation ends with the answer; the body need not outlive the push
    await send_response(send, response)


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer lifespan events, so the endpoint also runs on its own under uvicorn or a test client."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _too_large(queue: str, limit: int) -> HttpResponse:
    return _reject(413, f"queue {queue!r}: request body is over the {limit:,}-byte limit")


class QueueHttp:
    """``queue.http``: an ASGI app for one queue, mountable in Starlette or FastAPI; ``flask_view()`` for Flask."""

    def __init__(self, queue: Queue, *, max_body: int | None = None, allow_anonymous: bool | None = None) -> None:
        """``allow_anonymous`` defaults to the ``QUEUERUN_ALLOW_ANONYMOUS`` setting (refused on managed hosts)."""
        if not queue.spec.http:
            raise ConfigurationError(
                f"queue {queue.name!r}: declare it with http=True to expose it over HTTP (http is False)"
            )
        self.queue = queue
        self.max_body = max_body or queue.app.http_max_body
        self.allow_anonymous = anonymous_allowed() if allow_anonymous is None else allow_anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "http":
            await serve_asgi(
                scope,
                receive,
                send,
                find=lambda segments: (self.queue, segments),
                max_body=self.max_body,
                allow_anonymous=self.allow_anonymous,
            )

    def flask_view(self) -> Callable[..., Any]:
        """A Flask view function: ``flask_app.add_url_rule("/x/<group>", view_func=q.http.flask_view(), ...)``."""
        import asyncio

        from flask import Response, request

        def view(group: str | None = None, dedupe: str | None = None) -> Response:
            length = request.content_length
            raw_uri = str(request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or "")
            problem = raw_path_problem(raw_uri) or query_problem({"query_string": request.query_string})
            if problem is not None:
                result = _reject(400, f"queue {self.queue.name!r}: {problem}")
            elif length is not None and length > self.max_body:
                result = _too_large(self.queue.name, self.max_body)
            else:
                body = request.stream.read(self.max_body + 1)
                if len(body) > self.max_body:
                    result = _too_large(self.queue.name, self.max_body)
                else:
                    try:
                        headers = header_map(request.headers.items())
                    except RequestRejected as exc:
                        result = _reject(exc.status, f"queue {self.queue.name!r}: {exc}")
                    else:
                        req = HttpRequest(
                            method=request.method,
                            path=request.path,
                            headers=headers,
                            query={k: v for k, v in request.args.items()},
                            body=body,
                            client=request.remote_addr,
                        )
                        segments = [s for s in (group, dedupe) if s is not None]
                        result = asyncio.run(handle(self.queue, req, segments, allow_anonymous=self.allow_anonymous))
            return Response(
                result.encoded(), status=result.status, headers=dict(result.headers), content_type="application/json"
            )

        view.__name__ = f"queuerun_{self.queue.name.replace('.', '_')}"
        return view


class AppHttp:
    """Every ``http=True`` queue of an app, at ``/<queue name>[/<group>[/<dedupe id>]]``."""

    def __init__(self, app: App, *, allow_anonymous: bool | None = None) -> None:
        """``allow_anonymous`` defaults to the ``QUEUERUN_ALLOW_ANONYMOUS`` setting (refused on managed hosts)."""
        self.app = app
        self.allow_anonymous = anonymous_allowed() if allow_anonymous is None else allow_anonymous

    def _find(self, segments: list[str]) -> tuple[Queue, list[str]] | HttpResponse:
        if not segments:
            return _reject(404, "no queue in the path: POST to /queues/<queue name>")
        name, rest = segments[0], segments[1:]
        spec = next((s for s in self.app.specs if s.name == name and s.http), None)
        if spec is None:
            return _reject(404, f"no HTTP queue named {name!r}")
        return self.app.queues(name), rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "http":
            await serve_asgi(
                scope,
                receive,
                send,
                find=self._find,
                max_body=self.app.http_max_body,
                allow_anonymous=self.allow_anonymous,
            )

    async def respond(self, request: StarletteRequest, path: str) -> StarletteResponse:
        """For hosts that hand over a Starlette request (functions-framework): same routes and answers."""
        from starlette.requests import ClientDisconnect
        from starlette.responses import Response

        full: str = request.scope.get("path", "")
        try:
            if full.endswith(path):
                found = self._find(path_segments(request.scope, below=full[: len(full) - len(path)]))
            else:
                found = self._find(split_segments(path))
        except RequestRejected as exc:
            found = _reject(exc.status, str(exc))
        result: HttpResponse
        if isinstance(found, HttpResponse):
            result = found
        elif (problem := query_problem(request.scope)) is not None:
            result = _reject(400, f"queue {found[0].name!r}: {problem}")
        else:
            queue, segments = found
            limit = self.app.http_max_body
            declared = request.headers.get("content-length", "")
            body = bytearray()
            if declared.isdigit() and int(declared) > limit:
                result = _too_large(queue.name, limit)
            else:
                async with BODIES.reserve(int(declared) if declared.isdigit() else limit):
                    try:
                        async for chunk in request.stream():
                            body += chunk
                            if len(body) > limit:
                                break
                    except ClientDisconnect:
                        return Response(status_code=400)  # nobody reads it; nothing is queued
                    if len(body) > limit:
                        result = _too_large(queue.name, limit)
                    else:
                        try:
                            req = scope_request(request.scope, bytes(body), path)
                        except RequestRejected as exc:
                            result = _reject(exc.status, f"queue {queue.name!r}: {exc}")
                        else:
                            del body
                            result = await handle(queue, req, segments, allow_anonymous=self.allow_anonymous)
        return Response(
            result.encoded(), status_code=result.status, headers=dict(result.headers), media_type="application/json"
        )
