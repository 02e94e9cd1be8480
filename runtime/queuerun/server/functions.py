"""A functions-framework target serving the push server, for Cloud Run built from source.

Target name: ``queuerun``. In the app's ``main.py``::

    from queuerun.server.functions import queuerun  # noqa: F401

then ``functions-framework --target queuerun``, with or without ``--asgi`` (on Cloud Run from
source: ``GOOGLE_FUNCTION_TARGET=queuerun``, and ``FUNCTION_USE_ASGI=1`` for ASGI). The App comes
from ``QUEUERUN_APP`` ("module:attribute"), loaded on the first request. functions-framework hands
every path to this one function; the push server's Starlette app routes them as under uvicorn.

In the default WSGI (Flask) mode the Starlette app runs on a private event loop in one background
thread; WebSockets (``/_ws``) are not available there: use ``--asgi`` or ``queuerun serve``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import IO, TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

from .app import PushServer

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
    from werkzeug.wrappers import Response as WsgiResponse

READ_CHUNK = 64 * 1024

_server: PushServer | None = None
_asgi: ASGIApp | None = None
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


class WsgiRequest(Protocol):
    """What we read of the Flask/werkzeug request functions-framework passes in WSGI mode."""

    @property
    def environ(self) -> Mapping[str, Any]: ...

    @property
    def stream(self) -> IO[bytes]: ...


def _push_server() -> tuple[PushServer, ASGIApp]:
    global _server, _asgi
    with _lock:
        if _server is None or _asgi is None:
            from .logs import configure_logging
            from .serve import load_app

            configure_logging()
            _server = PushServer(load_app())
            _asgi = _server.asgi()
        return _server, _asgi


def queuerun(request: Request | WsgiRequest) -> Any:
    """functions-framework HTTP target: every request of the service comes through here.

    ASGI mode passes a Starlette Request (in a worker thread, since this function is not async):
    the answer is an ASGI app that Starlette then runs with the request's own channels. WSGI mode
    passes a Flask request: the answer is a werkzeug Response.
    """
    if isinstance(request, Request):
        return _Delegate()
    return _serve_wsgi(request)


class _Delegate:
    """Answers a request by running the push server's ASGI app on it (what Starlette calls a Response)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _, app = _push_server()
        await app(scope, receive, send)


# -- WSGI mode --------------------------------------------------------------------------------
def _private_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="queuerun-functions-loop", daemon=True).start()
            _loop = loop
        return _loop


def _serve_wsgi(request: WsgiRequest) -> WsgiResponse:
    from werkzeug.wrappers import Response as WsgiResponse

    _, app = _push_server()
    exchange = _Exchange(request.environ, request.stream)
    # The push server needs its own loop: the WSGI server's thread has none, and each request waits here.
    asyncio.run_coroutine_threadsafe(exchange.run(app), _private_loop()).result()
    return WsgiResponse(b"".join(exchange.body), status=exchange.status, headers=exchange.headers)


def wsgi_scope(environ: Mapping[str, Any]) -> Scope:
    """The ASGI HTTP scope of a WSGI request (PEP 3333 environ)."""
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.replace("_", "-").lower()
        else:
            continue
        if value:
            headers.append((name.encode("latin-1"), str(value).encode("latin-1")))
    # PEP 3333 carries the path's bytes as latin-1 characters; ASGI wants the UTF-8 text.
    path = str(environ.get("PATH_INFO", "")).encode("latin-1").decode("utf-8", "replace") or "/"
    root_path = str(environ.get("SCRIPT_NAME", "")).encode("latin-1").decode("utf-8", "replace")
    # The path as sent, before decoding (gunicorn and werkzeug set these): HTTP queues split it into
    # segments before decoding each, so "a%2Fb" stays one group id (PATH_INFO has it as "a/b").
    raw_uri = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    raw_path = raw_uri.partition("?")[0].encode("latin-1") if raw_uri.startswith("/") else None
    server_port = str(environ.get("SERVER_PORT", "") or "0")
    remote_port = str(environ.get("REMOTE_PORT", "") or "0")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).partition("/")[2] or "1.1",
        "method": str(environ.get("REQUEST_METHOD", "GET")).upper(),
        "scheme": str(environ.get("wsgi.url_scheme", "http")),
        "path": root_path + path,
        "root_path": root_path,
        "query_string": str(environ.get("QUERY_STRING", "")).encode("latin-1"),
        **({"raw_path": raw_path} if raw_path is not None else {}),
        "headers": headers,
        "client": (str(environ.get("REMOTE_ADDR", "")), int(remote_port) if remote_port.isdigit() else 0),
        "server": (str(environ.get("SERVER_NAME", "")), int(server_port) if server_port.isdigit() else 0),
    }


class _Exchange:
    """One WSGI request run through an ASGI app: the body read on demand, the answer collected."""

    def __init__(self, environ: Mapping[str, Any], stream: IO[bytes]) -> None:
        self.scope = wsgi_scope(environ)
        self._stream = stream  # werkzeug's: it ends at Content-Length, or at the end of chunked input
        length = str(environ.get("CONTENT_LENGTH", "") or "")
        self._left: int | None = int(length) if length.isdigit() else None
        self._body_done = False
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []

    async def run(self, app: ASGIApp) -> None:
        await app(self.scope, self._receive, self._send)

    async def _receive(self) -> Message:
        if self._body_done:
            # The request is over once read; an app waiting for a disconnect gets it at once.
            return {"type": "http.disconnect"}
        size = READ_CHUNK if self._left is None else min(READ_CHUNK, self._left)
        # A blocking read, off the loop: other requests share it.
        chunk = bytes(await asyncio.to_thread(self._stream.read, size)) if size else b""
        if self._left is not None:
            self._left -= len(chunk)
        self._body_done = not chunk or self._left == 0
        return {"type": "http.request", "body": chunk, "more_body": not self._body_done}

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = _text_headers(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self.body.append(bytes(message.get("body", b"")))


def _text_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
