"""Firestore storage for dedupe reservations and job completion records.

Dedupe (collection ``queuerun_dedupe``): one document per (project, app, queue, group, dedupe id),
its id the hash :func:`~queuerun.dedupe.dedupe_key` makes, so apps sharing a database stay apart. A
reservation is a ``create()`` (a write with the precondition "does not exist": atomic, and
contention-free where transactions on one document are not). Taking over an expired or stale-pending
record, recording the job id and releasing are compare-and-swap writes: the document is read,
checked, and written with the precondition ``update_time == what we read``. That is a one-document
transaction without locks; two callers racing for the same take-over cannot both win, and the loser
learns it at once (the emulator's pessimistic transactions under contention time out for seconds
instead, see the reference notes).

Completion records (collection ``queuerun_done``): one document per delivered job (topic and message
id; the topic path names the project and the app), written once its handler completed or it was
dead-lettered. On FIFO queues they keep a job from running again when Pub/Sub redelivers it (an
ordering key's later messages are redelivered after a nack, acknowledged or not); with completion
tracking on they also tell ``drain()`` when the jobs it pushed are settled.

Both collections carry ``expires_at`` (a timestamp) for a Firestore TTL policy. TTL deletion lags by
up to a day and the emulator never deletes, so every read checks the expiry itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..dedupe import DedupeRecord, DedupeStore
from ..store_names import DEDUPE_COLLECTION, DONE_COLLECTION, EXPIRES_FIELD

DEFAULT_DONE_TTL: Final = 7 * 24 * 3600.0  # Pub/Sub's default message retention: no redelivery outlives it

ClientFactory = Callable[[], Any]  # returns a google.cloud.firestore.Client


def _ts(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value)


class FirestoreDedupeStore(DedupeStore):
    """The five :class:`~queuerun.dedupe.DedupeStore` primitives on Firestore documents."""

    def __init__(self, client: ClientFactory, *, collection: str = DEDUPE_COLLECTION) -> None:
        self._client_factory = client
        self._collection = collection
        # update_time of the documents this process wrote, so confirm/release are one conditional write
        self._versions: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _doc(self, key: str) -> Any:
        return self._client_factory().collection(self._collection).document(key)

    @staticmethod
    def _fields(record: DedupeRecord) -> dict[str, Any]:
        return {
            "token": record.token,
            "created_at": _ts(record.created_at),
            EXPIRES_FIELD: _ts(record.expires_at),
            "job_id": record.job_id,
        }

    @staticmethod
    def _record(data: Mapping[str, Any]) -> DedupeRecord:
        return DedupeRecord(
            token=str(data.get("token", "")),
            created_at=_epoch(data.get("created_at", 0.0)),
            expires_at=_epoch(data.get(EXPIRES_FIELD, 0.0)),
            job_id=data.get("job_id"),
        )

    def _remember(self, key: str, token: str, update_time: Any) -> None:
        with self._lock:
            self._versions[(key, token)] = update_time

    def _forget(self, key: str, token: str) -> Any:
        with self._lock:
            return self._versions.pop((key, token), None)

    def _precondition(self, update_time: Any) -> Any:
        return self._client_factory().write_option(last_update_time=update_time)

    # -- primitives -------------------------------------------------------------------------
    def _create(self, key: str, record: DedupeRecord) -> bool:
        from google.api_core.exceptions import AlreadyExists

        try:
            result = self._doc(key).create(self._fields(record))
        except AlreadyExists:
            return False
        self._remember(key, record.token, result.update_time)
        return True

    def _get(self, key: str) -> DedupeRecord | None:
        snapshot = self._doc(key).get()
        if not snapshot.exists:
            return None
        return self._record(snapshot.to_dict() or {})

    def _replace(self, key: str, expected: DedupeRecord, record: DedupeRecord) -> bool:
        from google.api_core.exceptions import Aborted, FailedPrecondition, NotFound

        doc = self._doc(key)
        snapshot = doc.get()
        if not snapshot.exists:
            return False
        current = self._record(snapshot.to_dict() or {})
        if (current.token, current.job_id) != (expected.token, expected.job_id):
            return False
        try:
            result = doc.update(self._fields(record), option=self._precondition(snapshot.update_time))
        except (FailedPrecondition, NotFound, Aborted):
            return False  # someone else changed it since our read: they won
        self._remember(key, record.token, result.update_time)
        return True

    def _set_job(self, key: str, token: str, job_id: str) -> None:
        self._conditional(key, token, lambda doc, option: doc.update({"job_id": job_id}, option=option))

    def _delete(self, key: str, token: str) -> None:
        self._conditional(key, token, lambda doc, option: doc.delete(option=option))

    def _conditional(self, key: str, token: str, write: Callable[[Any, Any], Any]) -> None:
        """Apply ``write`` only while ``token`` still holds the record (a take-over may have replaced it)."""
        from google.api_core.exceptions import Aborted, FailedPrecondition, NotFound

        doc = self._doc(key)
        version = self._forget(key, token)
        for _ in range(3):
            if version is None:
                snapshot = doc.get()
                if not snapshot.exists or (snapshot.to_dict() or {}).get("token") != token:
                    return  # no longer ours: nothing to do
                version = snapshot.update_time
            try:
                write(doc, self._precondition(version))
                return
            except (FailedPrecondition, NotFound, Aborted):
                version = None  # changed since: re-read and check the token again


@dataclass(frozen=True)
class Completion:
    """A settled job: ``status`` is "done" (handler completed) or "dead" (dead-lettered)."""

    job_id: str
    queue: str
    status: str
    error: str = ""


def completion_key(topic: str, job_id: str) -> str:
    """Document id of a job's completion record: message ids are unique per topic only."""
    return hashlib.sha256(f"{topic}\0{job_id}".encode()).hexdigest()


class CompletionStore:
    """Completion records: written once per job, read before running a FIFO job and by ``drain()``."""

    def __init__(self, client: ClientFactory, *, collection: str = DONE_COLLECTION, ttl: float = DEFAULT_DONE_TTL):
        self._client_factory = client
        self._collection = collection
        self.ttl = ttl

    def _doc(self, topic: str, job_id: str) -> Any:
        return self._client_factory().collection(self._collection).document(completion_key(topic, job_id))

    def get(self, topic: str, job_id: str) -> Completion | None:
        """The job's record, unless absent or expired."""
        snapshot = self._doc(topic, job_id).get()
        return self._completion(snapshot, time.time())

    def mark(self, topic: str, job_id: str, *, queue: str, status: str, error: str = "") -> None:
        """Record that the job settled. A record already there (a racing redelivery) is kept."""
        from google.api_core.exceptions import AlreadyExists

        now = time.time()
        with contextlib.suppress(AlreadyExists):
            self._doc(topic, job_id).create(
                {
                    "job_id": job_id,
                    "queue": queue,
                    "status": status,
                    "error": error[:4000],
                    "completed_at": _ts(now),
                    EXPIRES_FIELD: _ts(now + self.ttl),
                }
            )

    def get_many(self, items: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Completion]:
        """Records of many (topic, job id) pairs at once; absent ones are left out."""
        wanted = {completion_key(topic, job_id): (topic, job_id) for topic, job_id in items}
        if not wanted:
            return {}
        client = self._client_factory()
        refs = [client.collection(self._collection).document(key) for key in wanted]
        now = time.time()
        out: dict[tuple[str, str], Completion] = {}
        for snapshot in client.get_all(refs):
            completion = self._completion(snapshot, now)
            if completion is not None:
                out[wanted[snapshot.id]] = completion
        return out

    @staticmethod
    def _completion(snapshot: Any, now: float) -> Completion | None:
        if not snapshot.exists:
            return None
        data = snapshot.to_dict() or {}
        if _epoch(data.get(EXPIRES_FIELD, 0.0)) <= now:
            return None
        return Completion(
            job_id=str(data.get("job_id", "")),
            queue=str(data.get("queue", "")),
            status=str(data.get("status", "done")),
            error=str(data.get("error", "")),
        )
