"""``socket``: send WebSocket messages to users from a job (or anywhere with ``socket.to``).

    from queuerun import socket

    @app.queue("orders")
    def prepare(order: dict, meta: JobMetadata) -> None:
        socket.send({"id": order["id"], "status": "preparing"})    # every connection of meta.user
        socket.to(["ops"]).send("order prepared")                   # other users

Targets, in this order: the users named with ``to(...)``; else the current job's user (a job pushed
from an authenticated request, or from a handler of such a job). In a job without a user (pushed
anonymously) ``send`` sends nothing and logs a warning, once per queue: the job goes on, as it would
for a user with no open connection. Outside any job, with no ``to(...)``, it raises
:class:`~queuerun.socket_hub.SocketUsageError`. A user with no open connection is skipped: sending
is not an error, and nothing is kept for a later connection.

Messages: ``bytes`` go as a binary frame, ``str`` as text, anything else as JSON text (datetimes as
ISO 8601, as job payloads). ``send`` returns once the message is handed to the fan-out (on Google
Cloud: committed to Firestore), so messages from one caller arrive in the order sent. ``asend`` is
the same for async code (it does not block the event loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from .context import current_job, current_user
from .payload import _to_json
from .socket_hub import Frame, SocketError, SocketHub, SocketUsageError, hub_for

if TYPE_CHECKING:
    from .app import App

# Firestore's document limit is 1 MiB; the inbox document carries the message and a few fields.
MAX_MESSAGE_BYTES: Final = 900_000

log = logging.getLogger("queuerun.sockets")
_warned: set[tuple[str, str]] = set()  # (app, queue): the no-user warning is given once per queue

__all__ = ["MAX_MESSAGE_BYTES", "Socket", "SocketError", "SocketUsageError", "encode_message", "socket"]


def encode_message(message: Any) -> Frame:
    """The WebSocket frame for ``message``. Raises SocketUsageError when it cannot be sent."""
    if isinstance(message, bytes | bytearray | memoryview):
        frame = Frame(data=bytes(message))
    elif isinstance(message, str):
        frame = Frame(text=message)
    else:
        try:
            text = json.dumps(message, default=_to_json, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            shown = repr(message)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise SocketUsageError(f"socket.send: message {shown} cannot be serialized to JSON: {exc}") from exc
        frame = Frame(text=text)
    if frame.size > MAX_MESSAGE_BYTES:
        raise SocketUsageError(
            f"socket.send: message is {frame.size:,} bytes, over the limit of {MAX_MESSAGE_BYTES:,} bytes"
        )
    return frame


def _user_ids(user_ids: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(user_ids, str) or not isinstance(user_ids, Iterable):
        values: tuple[object, ...] = (user_ids,)
    else:
        values = tuple(user_ids)
    for value in values:
        if not isinstance(value, str) or not value:
            raise SocketUsageError(f"socket.to: user ID is required (a non-empty string), got {value!r}")
    return values  # type: ignore[return-value]  # checked above


def _current_app() -> App:
    from .app import current_app

    return current_app("socket.send", "use Socket(app) to choose one", SocketUsageError)


class Socket:
    """Sends to users' WebSocket connections. ``socket`` (module level) resolves the current app."""

    __slots__ = ("_app", "_users")

    def __init__(self, app: App | None = None, users: tuple[str, ...] | None = None) -> None:
        self._app = app
        self._users = users

    def to(self, user_ids: str | Iterable[str]) -> Socket:
        """A socket that sends to these users (a user id or several), not to the job's user."""
        return Socket(self._app, _user_ids(user_ids))

    def _targets(self) -> tuple[str, ...]:
        """The users to send to; () in a job that has no user (logged, nothing sent)."""
        if self._users is not None:
            return self._users
        user = current_user.get()
        job = current_job.get()
        if user is None and job is not None:
            if (job.app.name, job.queue) not in _warned:
                _warned.add((job.app.name, job.queue))
                log.warning(
                    "socket.send in a job of queue %r sent nothing: the job has no user (it was pushed "
                    "anonymously); name users with socket.to(user_ids) to reach them (logged once per queue)",
                    job.queue,
                )
            return ()
        if user is None:
            raise SocketUsageError(
                "socket.send needs a user: outside a job, name the users with socket.to(user_ids).send(message)"
            )
        return (user,)

    def _hub(self) -> SocketHub:
        return hub_for(self._app or _current_app())

    def send(self, message: Any) -> None:
        """Send to every connection of the target users. Blocks until the fan-out has the message."""
        frame = encode_message(message)
        users = self._targets()
        if not users:
            return
        hub = self._hub()
        try:
            hub.send(users, frame)
        except SocketError:
            raise
        except Exception as exc:
            raise SocketError(f"socket.send to {list(users)!r}: the message was not sent: {exc}") from exc

    async def asend(self, message: Any) -> None:
        """``send`` for async code: the fan-out's I/O runs in a thread, not on the event loop."""
        frame = encode_message(message)
        users = self._targets()
        if not users:
            return
        hub = self._hub()
        if hub.kind == "in-process":  # no I/O: deliver now, keeping order with sync sends
            hub.send(users, frame)
            return
        try:
            await asyncio.to_thread(hub.send, users, frame)
        except SocketError:
            raise
        except Exception as exc:
            raise SocketError(f"socket.send to {list(users)!r}: the message was not sent: {exc}") from exc

    def connections(self, user_id: str) -> int:
        """Connections of ``user_id`` held by this process (all of them on the embedded backend)."""
        return self._hub().connection_count(_user_ids(user_id)[0])

    def __repr__(self) -> str:
        target = f"users={list(self._users)!r}" if self._users is not None else "the job's user"
        return f"<Socket {target}>"


socket = Socket()
