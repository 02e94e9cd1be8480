"""Dedupe reservations: the logic, over a few storage primitives each backend provides.

A push with a dedupe key first *reserves* the key (an atomic create), then publishes, then records
the job id. A second push inside the window gets the first job's id. A publish that certainly
queued nothing releases the key; a reservation left pending by a process that died is taken over
once it is older than the publish timeout, so the job is never lost for the whole window.

A publish whose outcome is unknown (the request went out, no answer came) marks the key
*unknown* for the rest of the window: the job may be queued and its id is not known, so another
push of the same key raises :class:`~queuerun.errors.PushOutcomeUnknownError` instead of queueing
a second copy. A dedupe id therefore means at most one job per window, never two.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Final

from .errors import PushError, PushOutcomeUnknownError

UNKNOWN_JOB: Final = ""  # the job id of a reservation whose publish had an unknown outcome


@dataclass(frozen=True)
class DedupeRecord:
    token: str  # who holds the reservation
    created_at: float  # epoch seconds
    expires_at: float
    job_id: str | None = None  # None while the publish is in flight; UNKNOWN_JOB if its outcome is unknown


@dataclass(frozen=True)
class Reservation:
    key: str
    token: str | None  # set when this caller owns the key and must publish
    job_id: str | None  # set when an earlier push already queued the job

    @property
    def duplicate(self) -> bool:
        return self.job_id is not None


def dedupe_key(queue: str, group_id: str | None, dedupe_id: str, *, app: str, project: str = "") -> str:
    """Hashed document id for (project, app, queue, group, dedupe id): fixed length, no '/', no hot prefixes.

    The app and project are part of the key because one Firestore database (or one embedded state
    file) may serve several apps: two apps declaring the same queue name must not dedupe each
    other's jobs.
    """
    # Each field length-prefixed: a separator alone is ambiguous once a field may hold it (group and
    # dedupe ids are any string: "a\0b"+"c" and "a"+"b\0c" joined the same). "v3" keeps keys of the
    # earlier, ambiguous scheme from ever matching. The hex digest is a valid Firestore document id.
    fields = ("v3", project, app, queue, "" if group_id is None else "g" + group_id, dedupe_id)
    digest = hashlib.sha256()
    for text in fields:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


class DedupeStore(ABC):
    """Reservation logic. Implementations supply the five storage primitives below."""

    publish_timeout: float = 60.0  # a pending record older than this belongs to a dead pusher
    poll_interval: float = 0.05

    # -- primitives -------------------------------------------------------------------------
    @abstractmethod
    def _create(self, key: str, record: DedupeRecord) -> bool:
        """Store ``record`` if no record exists under ``key``; False if one does. Atomic."""

    @abstractmethod
    def _get(self, key: str) -> DedupeRecord | None: ...

    @abstractmethod
    def _replace(self, key: str, expected: DedupeRecord, record: DedupeRecord) -> bool:
        """Swap ``expected`` for ``record`` atomically; False if the stored record changed."""

    @abstractmethod
    def _set_job(self, key: str, token: str, job_id: str) -> None:
        """Record the job id on the reservation held by ``token``."""

    @abstractmethod
    def _delete(self, key: str, token: str) -> None:
        """Remove the reservation if ``token`` still holds it."""

    # -- logic ------------------------------------------------------------------------------
    def reserve(self, key: str, window: float, *, wait: float | None = None) -> Reservation:
        """Own ``key`` for ``window`` seconds, or learn the job id of the push that owns it."""
        deadline = time.monotonic() + (self.publish_timeout if wait is None else wait)
        while True:
            now = time.time()
            mine = DedupeRecord(token=uuid.uuid4().hex, created_at=now, expires_at=now + window)
            if self._create(key, mine):
                return Reservation(key, mine.token, None)
            current = self._get(key)
            if current is None:
                continue  # released between our create and get: try again
            stale_pending = current.job_id is None and now - current.created_at > self.publish_timeout
            if current.expires_at <= now or stale_pending:
                if self._replace(key, current, mine):
                    return Reservation(key, mine.token, None)
                continue
            if current.job_id == UNKNOWN_JOB:
                until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(current.expires_at))
                raise PushOutcomeUnknownError(
                    f"dedupe key {key[:12]}...: an earlier push of this dedupe id got no answer, so its job may "
                    f"be queued; pushing it again would risk a second copy until the dedupe window ends at {until}"
                )
            if current.job_id is not None:
                return Reservation(key, None, current.job_id)
            if time.monotonic() >= deadline:
                raise PushError(f"dedupe key {key[:12]}... is still being pushed by another caller; try again")
            time.sleep(self.poll_interval)

    def confirm(self, reservation: Reservation, job_id: str) -> None:
        assert reservation.token is not None, "confirm() needs an owned reservation"  # internal misuse only
        self._set_job(reservation.key, reservation.token, job_id)

    def mark_unknown(self, reservation: Reservation) -> None:
        """The publish may or may not have queued the job: hold the key for the rest of its window."""
        assert reservation.token is not None, "mark_unknown() needs an owned reservation"  # internal misuse only
        self._set_job(reservation.key, reservation.token, UNKNOWN_JOB)

    def release(self, reservation: Reservation) -> None:
        if reservation.token is not None:
            self._delete(reservation.key, reservation.token)


class MemoryDedupeStore(DedupeStore):
    """In-process store; a lock gives the atomicity the primitives promise."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._records: dict[str, DedupeRecord] = {}

    def _create(self, key: str, record: DedupeRecord) -> bool:
        with self._lock:
            if key in self._records:
                return False
            self._records[key] = record
            return True

    def _get(self, key: str) -> DedupeRecord | None:
        with self._lock:
            return self._records.get(key)

    def _replace(self, key: str, expected: DedupeRecord, record: DedupeRecord) -> bool:
        with self._lock:
            if self._records.get(key) != expected:
                return False
            self._records[key] = record
            return True

    def _set_job(self, key: str, token: str, job_id: str) -> None:
        with self._lock:
            current = self._records.get(key)
            if current is not None and current.token == token:
                self._records[key] = replace(current, job_id=job_id)

    def _delete(self, key: str, token: str) -> None:
        with self._lock:
            current = self._records.get(key)
            if current is not None and current.token == token:
                del self._records[key]
