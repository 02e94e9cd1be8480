"""WebSocket connections and the fan-out behind ``socket.send``.

    SocketHub        this process's connections, per user; the send logic
    ├── InProcessHub the embedded backend (dev server, tests): a send is delivered in this process
    └── FirestoreHub Google Cloud: any instance can send to a user connected to any other

A hub keeps the connections of this process, each belonging to one user. ``send(users, frame)``
reaches every connection of those users; a user with no connection is skipped (no error, nothing
kept for later). Implementations provide three primitives: ``_announce(user)`` (the first connection
of a user arrived here), ``_withdraw(user)`` (its last one left) and ``_fan_out(users, frame)``.

FirestoreHub (why Firestore and not Pub/Sub: docs/websocket.md)
    presence   ``queuerun_socket_presence/<hash(app, user, instance)>``: "user U has connections on
               instance I", written before the connection is accepted, deleted when its last
               connection leaves, its ``expires_at`` refreshed by a heartbeat (a crashed instance's
               records expire; senders skip expired ones, a TTL policy deletes them).
    inbox      ``queuerun_socket_inbox/<instance>/queuerun_socket_messages/<auto id>``: one
               collection per instance, watched by one Firestore listener of that instance.
    send       deliver to this instance's own connections directly, query the presence records
               of the target users (``who in [...]``, 30 at a time), write one inbox document per
               other instance (one batched commit), and return once it is committed.
    receive    the listener hands each new inbox document to the local connections of its users,
               in commit order (ties broken by the sender's sequence number), then deletes it.

Guarantees: a send that starts after a connection was accepted reaches it while it stays connected
and its instance is up (presence is committed before the accept; Firestore queries are strongly
consistent; a listener sees every committed document). Sends from one sender (one thread calling
``send`` in turn) arrive in order: each send returns after its commit, so later sends commit later,
and a listener's snapshots follow commit order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import logging
import threading
import time
import uuid
import weakref
import zlib
from abc import ABC, abstractmethod
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from .errors import QueueRunError
from .store_names import EXPIRES_FIELD, INBOX_COLLECTION, MESSAGES_COLLECTION, PRESENCE_COLLECTION

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("queuerun.sockets")

IN_QUERY_LIMIT: Final = 30  # Firestore's limit on the values of one ``in`` filter
BATCH_LIMIT: Final = 500  # Firestore's limit on the writes of one batch
HEARTBEAT_SECONDS: Final = 60.0
PRESENCE_TTL_SECONDS: Final = 180.0  # three missed heartbeats: the instance is gone
INBOX_TTL_SECONDS: Final = 3600.0  # an inbox document outlives its instance by at most this (TTL cleanup)
LISTEN_TIMEOUT_SECONDS: Final = 30.0


class SocketError(QueueRunError):
    """A WebSocket message could not be sent (misuse is a :class:`SocketUsageError`)."""


class SocketUsageError(SocketError, ValueError):
    """``socket.send`` has no user to send to, a user id is empty, or the message cannot be sent."""


@dataclass(frozen=True)
class Frame:
    """One WebSocket message: text (JSON or a string) or binary."""

    text: str | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else len((self.text or "").encode("utf-8"))


class Connection(Protocol):
    """A connected client, as the hub sees it. ``deliver`` is called from any thread and must not block."""

    @property
    def user(self) -> str: ...

    def deliver(self, frame: Frame) -> None: ...


USER_LOCK_STRIPES: Final = 64


class SocketHub(ABC):
    """This process's connections per user, and the send logic over three primitives."""

    kind: str = "hub"

    def __init__(self) -> None:
        self._connections: dict[str, list[Connection]] = {}
        self._lock = threading.Lock()
        # Striped, so memory does not grow with every user ever seen; sharing a stripe only serializes.
        self._user_locks = tuple(threading.Lock() for _ in range(USER_LOCK_STRIPES))

    # -- primitives ---------------------------------------------------------------------------
    @abstractmethod
    def _announce(self, user: str) -> None:
        """The first connection of ``user`` arrived here: make it reachable from other senders."""

    @abstractmethod
    def _withdraw(self, user: str) -> None:
        """The last connection of ``user`` here left."""

    @abstractmethod
    def _fan_out(self, users: Sequence[str], frame: Frame) -> None:
        """Deliver ``frame`` to every connection of ``users``, wherever they are."""

    # -- logic --------------------------------------------------------------------------------
    def connect(self, connection: Connection) -> None:
        """Register a connection; returns once sends from anywhere reach it. Blocking (I/O on Cloud)."""
        user = connection.user
        with self._user_lock(user):  # a second connection waits for the first one's announcement
            with self._lock:
                first = user not in self._connections
                self._connections.setdefault(user, []).append(connection)
            if first:
                try:
                    self._announce(user)
                except BaseException:
                    self._remove(connection)
                    raise

    def disconnect(self, connection: Connection) -> None:
        """Forget a connection; the user's presence goes with its last connection. Never raises."""
        user = connection.user
        with self._user_lock(user):
            if self._remove(connection):
                try:
                    self._withdraw(user)
                except Exception as exc:  # the presence record expires by itself
                    log.warning("socket hub: could not withdraw user %r: %s", user, exc)

    def _user_lock(self, user: str) -> threading.Lock:
        return self._user_locks[zlib.crc32(user.encode("utf-8")) % USER_LOCK_STRIPES]

    def _remove(self, connection: Connection) -> bool:
        """Drop ``connection``; True when it was its user's last one here."""
        with self._lock:
            mine = self._connections.get(connection.user, [])
            with contextlib.suppress(ValueError):
                mine.remove(connection)
            if mine:
                return False
            self._connections.pop(connection.user, None)
            return True

    def send(self, users: Iterable[str], frame: Frame) -> None:
        """Deliver ``frame`` to every connection of ``users``; users with none are skipped."""
        targets = list(dict.fromkeys(users))
        if targets:
            self._fan_out(targets, frame)

    def deliver_local(self, users: Iterable[str], frame: Frame) -> int:
        """Hand ``frame`` to this process's connections of ``users``; returns how many got it."""
        with self._lock:
            connections = [c for user in dict.fromkeys(users) for c in self._connections.get(user, ())]
        for connection in connections:
            connection.deliver(frame)
        return len(connections)

    def local_users(self) -> list[str]:
        with self._lock:
            return list(self._connections)

    def connection_count(self, user: str | None = None) -> int:
        """Connections held in this process, of ``user`` or of everyone."""
        with self._lock:
            if user is not None:
                return len(self._connections.get(user, ()))
            return sum(len(c) for c in self._connections.values())

    def close(self) -> None:  # noqa: B027  (optional hook, deliberately not abstract)
        """Release resources (listeners, threads, presence records)."""


class InProcessHub(SocketHub):
    """The embedded backend's hub: jobs run in this process, so do the connections they send to."""

    kind = "in-process"

    def _announce(self, user: str) -> None:
        pass

    def _withdraw(self, user: str) -> None:
        pass

    def _fan_out(self, users: Sequence[str], frame: Frame) -> None:
        self.deliver_local(users, frame)


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


class FirestoreHub(SocketHub):
    """Cross-instance fan-out on Firestore: presence records, and one listened inbox per instance."""

    kind = "firestore"

    def __init__(
        self,
        client: Callable[[], Any],
        *,
        app_name: str,
        instance: str | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
        presence_ttl: float = PRESENCE_TTL_SECONDS,
        inbox_ttl: float = INBOX_TTL_SECONDS,
        listen_timeout: float = LISTEN_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__()
        if presence_ttl <= heartbeat:
            raise ValueError(f"presence_ttl ({presence_ttl:g} s) must be longer than heartbeat ({heartbeat:g} s)")
        self._client = client
        self.app_name = app_name
        self.instance = instance or uuid.uuid4().hex
        self.heartbeat = heartbeat
        self.presence_ttl = presence_ttl
        self.inbox_ttl = inbox_ttl
        self.listen_timeout = listen_timeout
        self._seq = itertools.count(1)
        self._start_lock = threading.Lock()
        self._watch: Any = None
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._delivered: OrderedDict[str, None] = OrderedDict()  # recent inbox ids: a listener restart re-sends
        self._cleaner = ThreadPoolExecutor(1, thread_name_prefix="queuerun-socket-inbox")

    # -- documents ----------------------------------------------------------------------------
    def _who(self, user: str) -> str:
        return f"{self.app_name}\x1f{user}"

    def _presence_ref(self, user: str) -> Any:
        key = hashlib.sha256(f"{self.app_name}\0{user}\0{self.instance}".encode()).hexdigest()[:40]
        return self._client().collection(PRESENCE_COLLECTION).document(key)

    def _inbox(self, instance: str) -> Any:
        return self._client().collection(INBOX_COLLECTION).document(instance).collection(MESSAGES_COLLECTION)

    def _presence_fields(self, user: str) -> dict[str, Any]:
        now = time.time()
        return {
            "app": self.app_name,
            "user": user,
            "who": self._who(user),
            "instance": self.instance,
            "updated_at": _utc(now),
            EXPIRES_FIELD: _utc(now + self.presence_ttl),
        }

    # -- primitives ---------------------------------------------------------------------------
    def _announce(self, user: str) -> None:
        self.start()
        self._presence_ref(user).set(self._presence_fields(user))

    def _withdraw(self, user: str) -> None:
        self._presence_ref(user).delete()

    def _fan_out(self, users: Sequence[str], frame: Frame) -> None:
        self.deliver_local(users, frame)
        remote = self._remote_instances(users)
        if not remote:
            return
        from google.cloud import firestore

        seq = next(self._seq)
        body: dict[str, Any] = {"text": frame.text} if frame.text is not None else {"data": frame.data}
        writes = [(instance, sorted(targets)) for instance, targets in remote.items()]
        for start in range(0, len(writes), BATCH_LIMIT):
            batch = self._client().batch()
            for instance, targets in writes[start : start + BATCH_LIMIT]:
                batch.set(
                    self._inbox(instance).document(),
                    {
                        "app": self.app_name,
                        "users": targets,
                        "sender": self.instance,
                        "seq": seq,
                        "at": firestore.SERVER_TIMESTAMP,
                        EXPIRES_FIELD: _utc(time.time() + self.inbox_ttl),
                        **body,
                    },
                )
            batch.commit()

    def _remote_instances(self, users: Sequence[str]) -> dict[str, set[str]]:
        """Other live instances holding connections of ``users``: instance -> those users."""
        from google.cloud.firestore import FieldFilter

        now = time.time()
        found: dict[str, set[str]] = defaultdict(set)
        presence = self._client().collection(PRESENCE_COLLECTION)
        for start in range(0, len(users), IN_QUERY_LIMIT):
            chunk = [self._who(u) for u in users[start : start + IN_QUERY_LIMIT]]
            for doc in presence.where(filter=FieldFilter("who", "in", chunk)).stream():
                data = doc.to_dict() or {}
                instance = data.get("instance")
                if not instance or instance == self.instance or _epoch(data.get(EXPIRES_FIELD)) < now:
                    continue  # this instance delivered already; an expired record is a dead instance
                found[str(instance)].add(str(data.get("user")))
        return found

    # -- listener and heartbeat ---------------------------------------------------------------
    def start(self) -> None:
        """Listen to this instance's inbox; returns after the listener's first snapshot."""
        with self._start_lock:
            if self._watch is None:
                self._stopping.clear()
                self._listen()
            if self._heartbeat_thread is None:
                self._heartbeat_thread = threading.Thread(
                    target=self._heartbeat_loop, name="queuerun-socket-heartbeat", daemon=True
                )
                self._heartbeat_thread.start()

    def _ensure_listening(self) -> None:
        """Listen again if the listener stopped: its first snapshot brings what arrived meanwhile."""
        with self._start_lock:
            watch = self._watch
            if self._stopping.is_set() or (watch is not None and getattr(watch, "is_active", True)):
                return
            log.warning("socket hub: the inbox listener of instance %s stopped; listening again", self.instance)
            if watch is not None:
                with contextlib.suppress(Exception):
                    watch.unsubscribe()
                self._watch = None
            self._listen()

    def _listen(self) -> None:
        self._listening.clear()
        self._watch = self._inbox(self.instance).on_snapshot(self._on_snapshot)
        if not self._listening.wait(self.listen_timeout):
            with contextlib.suppress(Exception):
                self._watch.unsubscribe()
            self._watch = None
            raise SocketError(
                f"socket hub: the Firestore listener on {INBOX_COLLECTION}/{self.instance} gave no snapshot "
                f"within {self.listen_timeout:g} s"
            )

    def _on_snapshot(self, docs: Any, changes: Any, read_time: Any) -> None:
        added = [c.document for c in changes if getattr(c.type, "name", "") == "ADDED"]
        added.sort(key=lambda d: (_epoch(d.get("at")), str(d.get("sender")), int(d.get("seq") or 0)))
        fresh = []
        for doc in added:
            if doc.id in self._delivered:
                continue
            self._delivered[doc.id] = None
            if len(self._delivered) > 10_000:
                self._delivered.popitem(last=False)
            data = doc.to_dict() or {}
            text, blob = data.get("text"), data.get("data")
            frame = Frame(text=text) if text is not None else Frame(data=bytes(blob or b""))
            self.deliver_local([str(u) for u in data.get("users", [])], frame)
            fresh.append(doc.reference)
        self._listening.set()
        if fresh and not self._stopping.is_set():
            # Delivered documents are deleted: a growing collection slows the listener (measured on
            # the emulator), and the TTL policy would otherwise keep them for up to a day.
            with contextlib.suppress(RuntimeError):  # the cleaner is shut down
                self._cleaner.submit(self._delete, fresh)

    def _delete(self, refs: list[Any]) -> None:
        try:
            for start in range(0, len(refs), BATCH_LIMIT):
                batch = self._client().batch()
                for ref in refs[start : start + BATCH_LIMIT]:
                    batch.delete(ref)
                batch.commit()
        except Exception as exc:  # left for the TTL policy
            log.warning("socket hub: could not delete %d delivered inbox document(s): %s", len(refs), exc)

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.heartbeat):
            try:
                self._beat()
            except Exception as exc:
                log.warning("socket hub: heartbeat failed: %s", exc)

    def _beat(self) -> None:
        users = self.local_users()
        if users:
            self._ensure_listening()
        for start in range(0, len(users), BATCH_LIMIT):
            batch = self._client().batch()
            for user in users[start : start + BATCH_LIMIT]:
                batch.set(self._presence_ref(user), self._presence_fields(user))
            batch.commit()

    def close(self) -> None:
        self._stopping.set()
        with self._start_lock:
            watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(Exception):
                watch.unsubscribe()
        for user in self.local_users():
            with contextlib.suppress(Exception):
                self._withdraw(user)
        self._cleaner.shutdown(wait=True)


# -- one hub per app and backend kind ------------------------------------------------------------
_hubs: weakref.WeakKeyDictionary[App, dict[str, SocketHub]] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def _kind(app: App) -> str:
    return "firestore" if app.backend.name == "gcp" else "in-process"


def create_hub(app: App) -> SocketHub:
    """The hub the app's backend calls for: Firestore on ``gcp``, in-process otherwise."""
    if _kind(app) != "firestore":
        return InProcessHub()
    backend: Any = app.backend
    return FirestoreHub(lambda: backend.firestore, app_name=app.name)


def hub_for(app: App) -> SocketHub:
    """The hub this process uses for ``app``: the same one for its sockets and its senders."""
    kind = _kind(app)
    with _hubs_lock:
        hubs = _hubs.setdefault(app, {})
        hub = hubs.get(kind)
        if hub is None:
            hub = hubs[kind] = create_hub(app)
        return hub


def install_hub(app: App, hub: SocketHub) -> None:
    """Use ``hub`` for ``app`` in this process (a custom fan-out, or a test double)."""
    with _hubs_lock:
        _hubs.setdefault(app, {})[hub.kind] = hub


def close_hubs(app: App) -> None:
    """Close every hub of ``app`` (server shutdown): listeners stop, presence records are withdrawn."""
    with _hubs_lock:
        hubs = list(_hubs.pop(app, {}).values())
    for hub in hubs:
        hub.close()


# -- what the infrastructure must provide -------------------------------------------------------
def cloud_requirements(app_name: str) -> dict[str, Any]:
    """What QueueRunApp must provision for the Google Cloud fan-out, as data.

    No IAM beyond what the runtime service account has already (``roles/datastore.user`` on the
    app's database): presence and inbox are documents in that database.
    """
    return {
        "app": app_name,
        "iam": [],
        "firestore_ttl": [
            {"collection_group": PRESENCE_COLLECTION, "field": EXPIRES_FIELD},
            {"collection_group": MESSAGES_COLLECTION, "field": EXPIRES_FIELD},
        ],
        # Queried by ``who in [...]`` (single-field, automatic) and listened to whole: no composite index.
        "firestore_indexes": [],
        "cloud_run": {
            "websocket_path": "/_ws",
            "note": "a WebSocket is one request: it lasts at most the service's request timeout (max 3600 s); "
            "clients reconnect",
        },
    }
