"""The WebSocket endpoint users' browsers connect to; ``socket.send`` from a job reaches them here.

``websocket_app(app)`` is an ASGI app (Starlette, FastAPI, uvicorn); the push server mounts it at
``/_ws``. Any path under the mount point is the same endpoint.

A connection is authenticated with the App's ``authenticate`` hook, which gets the handshake as an
:class:`~queuerun.endpoint.HttpRequest` (method ``GET``, headers, query string): browsers cannot set
headers on a WebSocket, so a token comes in a cookie, the ``Sec-WebSocket-Protocol`` header (the first
subprotocol offered is accepted; recommended, with a short-lived ticket), or the query string
(``/_ws?token=...``: it lands in proxies' and browsers' histories, so prefer the other two; queuerun
never logs a query string).

Before the hook, the handshake's ``Origin`` is checked: a browser page on another site can open a
WebSocket that carries this site's cookies (cross-site WebSocket hijacking), so a handshake with an
``Origin`` is accepted only from the same origin (its host equals the ``Host`` header) or from one of
``allowed_origins`` (``QUEUERUN_ALLOWED_ORIGINS``, comma-separated ``scheme://host[:port]``; ``*``
allows every origin). Clients that are not browsers send no ``Origin`` and are not checked. Each
instance holds at most ``max_connections`` sockets, and ``max_connections_per_user`` per user.

The handshake is accepted and then closed at once when it is refused (browsers never see an HTTP
status on a failed handshake, only a close code):

    4401   the hook raised AuthenticationError(status=401), returned None, or the app has no hook
    4403   the hook raised AuthenticationError(status=403), or the Origin is not allowed
    4400   the handshake has two Authorization headers
    1011   the hook failed otherwise, or the connection could not be registered (try again)
    1013   the client reads too slowly (more than ``max_pending`` messages waited for it), or the
           instance or the user is at the connection cap (try again later)

The close reason carries the message (cut to the 123 bytes a close frame allows). Messages the
client sends are ignored. When the client disconnects its connection is dropped from the hub, and
with its user's last connection on this instance, the user's presence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from ..endpoint import Receive, Scope, Send, authenticate, lifespan, relative_path, scope_request
from ..errors import AuthenticationError, ConfigurationError, RequestRejected
from ..invoker import iam_checked
from ..socket_hub import Frame, SocketHub, hub_for

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("queuerun.sockets")

WEBSOCKET_PATH: Final = "/_ws"  # where the server mounts websocket_app(app)
CLOSE_BAD_REQUEST: Final = 4400
CLOSE_UNAUTHENTICATED: Final = 4401  # 4000 + the HTTP status, a common convention
CLOSE_FORBIDDEN: Final = 4403
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013
MAX_PENDING: Final = 10_000  # messages waiting for one slow client before it is cut off
# Each socket holds a little memory and, on Google Cloud, a presence record: bounded so that one user
# (or a script with many accounts) cannot take an instance's memory or its file descriptors.
MAX_CONNECTIONS: Final = 1_000
MAX_CONNECTIONS_PER_USER: Final = 20
MAX_CLOSE_REASON_BYTES: Final = 123

_OVERFLOW: Final = Frame()  # queued when the backlog is full: the writer closes the connection
# Registration does I/O on Google Cloud (presence records): it runs here, off the event loop, and
# clean-up is handed here from a ``finally`` so that a cancelled connection is still cleaned up.
_registrar = ThreadPoolExecutor(8, thread_name_prefix="queuerun-socket")


def _reason(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return text
    return data[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


class SocketConnection:
    """One accepted WebSocket: frames from any thread are queued on its event loop, in order."""

    def __init__(self, user: str, loop: asyncio.AbstractEventLoop, *, max_pending: int = MAX_PENDING) -> None:
        self._user = user
        self._loop = loop
        self._max_pending = max_pending
        self.queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._overflowed = False
        self._state = threading.Lock()
        self._registered = False
        self._released = False

    @property
    def user(self) -> str:
        return self._user

    def deliver(self, frame: Frame) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the connection is gone
            self._loop.call_soon_threadsafe(self._put, frame)

    def _put(self, frame: Frame) -> None:
        if self._overflowed:
            return
        if self.queue.qsize() >= self._max_pending:
            self._overflowed = True
            frame = _OVERFLOW
        self.queue.put_nowait(frame)

    def register(self, hub: SocketHub) -> None:
        """Add to the hub (blocking); undone at once if ``release`` came first."""
        hub.connect(self)
        with self._state:
            self._registered = True
            undo = self._released
        if undo:
            hub.disconnect(self)

    def release(self, hub: SocketHub) -> None:
        """Leave the hub, in the background; safe to call from a ``finally`` being cancelled."""
        with self._state:
            self._released = True
            registered, self._registered = self._registered, False
        if registered:
            _registrar.submit(hub.disconnect, self)

    def __repr__(self) -> str:
        return f"<SocketConnection user={self._user!r}>"


def _origin_set(origins: Collection[str]) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/").lower() for o in origins)


def origin_allowed(headers: Mapping[str, str], allowed: Collection[str]) -> bool:
    """Whether a handshake's ``Origin`` may connect: absent (not a browser), same origin, or listed."""
    origin = headers.get("origin")
    if origin is None or "*" in allowed:
        return True
    origin = origin.strip().rstrip("/").lower()
    if origin in allowed:
        return True
    host = headers.get("host", "").strip().lower()
    return bool(host) and origin.partition("://")[2] == host


class ConnectionCaps:
    """Sockets open on this instance, in total and per user; ``take`` refuses beyond the caps."""

    def __init__(self, total: int, per_user: int) -> None:
        self.total, self.per_user = total, per_user
        self._open = 0
        self._by_user: dict[str, int] = {}
        self._lock = threading.Lock()

    def full(self) -> bool:
        with self._lock:
            return self._open >= self.total

    def take(self, user: str) -> str | None:
        """Count one more socket of ``user``, or say why not."""
        with self._lock:
            if self._open >= self.total:
                return f"this instance holds its maximum of {self.total} connections: try again later"
            if self._by_user.get(user, 0) >= self.per_user:
                return f"this user already has {self.per_user} connections here: close one"
            self._open += 1
            self._by_user[user] = self._by_user.get(user, 0) + 1
            return None

    def give_back(self, user: str) -> None:
        with self._lock:
            self._open -= 1
            left = self._by_user.get(user, 0) - 1
            if left > 0:
                self._by_user[user] = left
            else:
                self._by_user.pop(user, None)


class SocketEndpoint:
    """ASGI app: authenticates WebSocket handshakes and streams the user's messages to them."""

    def __init__(
        self,
        app: App,
        *,
        hub: SocketHub | None = None,
        max_pending: int = MAX_PENDING,
        allowed_origins: Collection[str] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_user: int = MAX_CONNECTIONS_PER_USER,
    ) -> None:
        """``allowed_origins`` defaults to the app's ``QUEUERUN_ALLOWED_ORIGINS`` setting."""
        self.app = app
        self._hub = hub
        self.max_pending = max_pending
        self._origins = None if allowed_origins is None else _origin_set(allowed_origins)
        self.caps = ConnectionCaps(max_connections, max_connections_per_user)

    @property
    def allowed_origins(self) -> frozenset[str]:
        if self._origins is None:  # read when first needed: settings are never read at import
            self._origins = _origin_set(self.app.settings.allowed_origins)
        return self._origins

    @property
    def hub(self) -> SocketHub:
        return self._hub or hub_for(self.app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._serve(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "http":
            body = b'{"error": "this is a WebSocket endpoint: connect with ws:// or wss://"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 426,
                    "headers": [(b"content-type", b"application/json"), (b"upgrade", b"websocket")],
                }
            )
            await send({"type": "http.response.body", "body": body})

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if self.caps.full():  # before the hook: a flood of handshakes costs no verification
            await self._close_now(scope, send, CLOSE_TRY_AGAIN_LATER, "too many connections: try again later")
            return
        user = await self._user(scope, send)
        if user is None:
            return
        refusal = self.caps.take(user)
        if refusal is not None:
            log.warning("socket: connection of user %r refused: %s", user, refusal)
            await self._close_now(scope, send, CLOSE_TRY_AGAIN_LATER, refusal)
            return
        try:
            await self._connected(scope, receive, send, user)
        finally:
            self.caps.give_back(user)

    async def _connected(self, scope: Scope, receive: Receive, send: Send, user: str) -> None:
        connection = SocketConnection(user, asyncio.get_running_loop(), max_pending=self.max_pending)
        hub = self.hub
        try:
            try:
                await asyncio.get_running_loop().run_in_executor(_registrar, connection.register, hub)
            except Exception as exc:
                log.exception("socket: could not register a connection of user %r", user)
                reason = f"connection not registered, try again: {exc}"
                await self._close_now(scope, send, CLOSE_INTERNAL_ERROR, reason)
                return
            await send({"type": "websocket.accept", "subprotocol": self._subprotocol(scope)})
            log.info("socket: user %r connected", user)
            await self._stream(connection, receive, send)
        finally:
            connection.release(hub)
            log.info("socket: user %r disconnected", user)

    async def _user(self, scope: Scope, send: Send) -> str | None:
        """The user of this handshake, or None after closing it with the reason."""
        try:
            request = scope_request(scope, b"", relative_path(scope))
        except RequestRejected as exc:
            await self._close_now(scope, send, CLOSE_BAD_REQUEST, str(exc))
            return None
        if not origin_allowed(request.headers, self.allowed_origins):
            origin = request.headers.get("origin", "")[:60]
            log.warning("socket: handshake from origin %r refused (not in allowed_origins)", origin)
            await self._close_now(scope, send, CLOSE_FORBIDDEN, f"origin {origin!r} is not allowed")
            return None
        try:
            if self.app.authenticate is None and not iam_checked(self.app.settings):
                raise AuthenticationError(
                    f"app {self.app.name!r} has no authenticate hook: WebSocket connections need a user"
                )
            user = await authenticate(self.app, request)
            if user is None:
                raise AuthenticationError("authentication required")
            return user
        except AuthenticationError as exc:
            code = CLOSE_FORBIDDEN if exc.status == 403 else CLOSE_UNAUTHENTICATED
            await self._close_now(scope, send, code, str(exc))
        except ConfigurationError as exc:  # the hook returned a non-string: the app's fault, told to no client
            log.error("socket: %s", exc)
            await self._close_now(scope, send, CLOSE_INTERNAL_ERROR, "authentication failed: server error")
        except Exception:
            log.exception("socket: the authenticate hook of app %r failed", self.app.name)
            await self._close_now(scope, send, CLOSE_INTERNAL_ERROR, "authentication failed: server error")
        return None

    @staticmethod
    def _subprotocol(scope: Scope) -> str | None:
        offered: list[str] = list(scope.get("subprotocols") or [])
        return offered[0] if offered else None

    async def _close_now(self, scope: Scope, send: Send, code: int, reason: str) -> None:
        await send({"type": "websocket.accept", "subprotocol": self._subprotocol(scope)})
        await send({"type": "websocket.close", "code": code, "reason": _reason(reason)})

    @staticmethod
    async def _stream(connection: SocketConnection, receive: Receive, send: Send) -> None:
        async def write() -> None:
            while True:
                frame = await connection.queue.get()
                if frame is _OVERFLOW:
                    reason = f"over {connection._max_pending} messages waiting: reconnect"
                    await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER, "reason": reason})
                    return
                message: dict[str, Any] = {"type": "websocket.send"}
                if frame.data is not None:
                    message["bytes"] = frame.data
                else:
                    message["text"] = frame.text
                await send(message)

        async def read() -> None:
            while (await receive())["type"] != "websocket.disconnect":
                pass  # client messages are not handled

        tasks = [asyncio.ensure_future(read()), asyncio.ensure_future(write())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), OSError):
                    log.warning("socket: connection of %r ended: %r", connection.user, task.exception())
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task


def websocket_app(
    app: App,
    *,
    hub: SocketHub | None = None,
    max_pending: int = MAX_PENDING,
    allowed_origins: Collection[str] | None = None,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_user: int = MAX_CONNECTIONS_PER_USER,
) -> SocketEndpoint:
    """The ASGI WebSocket endpoint of ``app`` (mount it at ``/_ws``); ``hub`` overrides the app's hub."""
    return SocketEndpoint(
        app,
        hub=hub,
        max_pending=max_pending,
        allowed_origins=allowed_origins,
        max_connections=max_connections,
        max_connections_per_user=max_connections_per_user,
    )
