"""SQLite storage for the embedded backend: jobs, group sequence numbers and dedupe records.

``:memory:`` by default; a file makes state durable, so a restarted dev server loses no job.
All access goes through one connection under one lock (SQLite serializes writers anyway).

A state file has at most one worker process: :meth:`JobStore.recover` (which a starting backend
calls before running anything) takes an exclusive lock on ``<file>.lock`` for the life of the
store, and refuses, naming the owner's pid, while another live process holds it. So two processes
on one file never run a job twice at once, and a job marked running is requeued only by the next
owner, once its previous owner is gone. Processes that only push or read dead letters (``queuerun
push``, ``dlq``, a script) need no lock: SQLite serializes their writes. The file is created
owner-readable only (0600): it holds every payload.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..dedupe import DedupeRecord, DedupeStore
from ..errors import ConfigurationError
from ..wire import OutgoingJob

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    group_id TEXT,
    group_seq INTEGER,
    data BLOB NOT NULL,
    attributes TEXT NOT NULL,
    state TEXT NOT NULL,            -- ready | running | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, state, available_at, ord);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, available_at);
CREATE INDEX IF NOT EXISTS jobs_group ON jobs (queue, group_id, state, ord);
CREATE TABLE IF NOT EXISTS group_seq (
    queue TEXT NOT NULL, group_id TEXT NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (queue, group_id)
);
CREATE TABLE IF NOT EXISTS dedupe (
    key TEXT PRIMARY KEY, token TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, job_id TEXT
);
"""


@dataclass(frozen=True)
class StoredJob:
    id: str
    queue: str
    group_id: str | None
    group_seq: int | None
    data: bytes
    attributes: dict[str, str]
    attempts: int
    error: str | None


_COLUMNS = "id, queue, group_id, group_seq, data, attributes, attempts, error"


def _row(row: tuple[object, ...]) -> StoredJob:
    id_, queue, group_id, group_seq, data, attributes, attempts, error = row
    return StoredJob(
        id=str(id_),
        queue=str(queue),
        group_id=None if group_id is None else str(group_id),
        group_seq=None if group_seq is None else int(group_seq),  # type: ignore[call-overload]
        data=bytes(data),  # type: ignore[call-overload]
        attributes=json.loads(str(attributes)),
        attempts=int(attempts),  # type: ignore[call-overload]
        error=None if error is None else str(error),
    )


def _create_private(path: Path) -> None:
    """Create ``path`` owner-readable only, unless it exists (SQLite gives its WAL files the same mode)."""
    if not path.parent.is_dir():
        raise ConfigurationError(f"state file {str(path)!r}: folder {str(path.parent)!r} does not exist")
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigurationError(f"state file {str(path)!r}: {exc.strerror}") from None


class WorkerLock:
    """An exclusive ``flock`` on ``<state file>.lock``, holding the owner's pid and command line."""

    def __init__(self, state_file: Path) -> None:
        self.path = state_file.with_name(state_file.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigurationError(
                f"state file {str(self.path)[: -len('.lock')]!r} is in use by {owner}: one process runs its jobs "
                "at a time; stop that one, or give this one its own state file (--state / state_file=)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({' '.join(sys.argv)[:200]})".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class JobStore:
    def __init__(self, path: str | Path | None = None) -> None:
        target = ":memory:" if path is None else str(path)
        self._shared = target != ":memory:"
        self._worker_lock = WorkerLock(Path(target)) if self._shared else None
        if self._shared:
            _create_private(Path(target))
        try:
            self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"state file {target!r}: {exc}") from None
        self.lock = threading.RLock()
        with self.lock:
            try:
                if target != ":memory:":
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(SCHEMA)
                # Kept in memory: drain() asks after every finished job, and COUNT(*) would scan.
                (self._pending,) = self._db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state IN ('ready', 'running')"
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                self._db.close()
                raise ConfigurationError(f"state file {target!r} is not a queuerun state file: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self._db.close()
        if self._worker_lock is not None:
            self._worker_lock.release()

    # -- writes -----------------------------------------------------------------------------
    def insert(self, jobs: Sequence[OutgoingJob], *, fifo: bool) -> list[str]:
        ids: list[str] = []
        now = time.time()
        with self.transaction() as db:
            for job in jobs:
                job_id = uuid.uuid4().hex
                seq = None
                if fifo and job.group_id is not None:
                    db.execute(
                        "INSERT INTO group_seq (queue, group_id, last) VALUES (?, ?, 1) "
                        "ON CONFLICT (queue, group_id) DO UPDATE SET last = last + 1",
                        (job.queue, job.group_id),
                    )
                    (seq,) = db.execute(
                        "SELECT last FROM group_seq WHERE queue = ? AND group_id = ?", (job.queue, job.group_id)
                    ).fetchone()
                db.execute(
                    "INSERT INTO jobs (id, queue, group_id, group_seq, data, attributes, state, available_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'ready', ?)",
                    (job_id, job.queue, job.group_id, seq, job.data, json.dumps(job.attributes()), now),
                )
                ids.append(job_id)
            self._pending += len(ids)
        return ids

    def claim(self, queue: str, *, fifo: bool, limit: int, now: float) -> list[StoredJob]:
        """Mark up to ``limit`` runnable jobs running. FIFO: only each idle group's head."""
        if limit <= 0:
            return []
        with self.transaction() as db:
            if fifo:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM jobs j WHERE j.queue = ? AND j.state = 'ready' AND j.available_at <= ? "
                    "AND j.ord = (SELECT MIN(ord) FROM jobs h WHERE h.queue = j.queue AND h.group_id = j.group_id "
                    "AND h.state IN ('ready', 'running')) ORDER BY j.ord LIMIT ?",
                    (queue, now, limit),
                ).fetchall()
            else:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE queue = ? AND state = 'ready' AND available_at <= ? "
                    "ORDER BY ord LIMIT ?",
                    (queue, now, limit),
                ).fetchall()
            jobs = [_row(r) for r in rows]
            db.executemany(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1 WHERE id = ?", [(j.id,) for j in jobs]
            )
        return [StoredJob(**{**j.__dict__, "attempts": j.attempts + 1}) for j in jobs]

    def finish(self, job_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._pending -= 1

    def retry(self, job_id: str, *, at: float, error: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state = 'ready', available_at = ?, error = ? WHERE id = ?", (at, error, job_id))

    def bury(self, job_id: str, *, error: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state = 'dead', error = ? WHERE id = ?", (error, job_id))
            self._pending -= 1

    def recover(self) -> int:
        """Become the file's worker process, then deliver again (at least once) the jobs left running
        by the previous one, which is gone: it held the lock until it exited."""
        if self._worker_lock is not None:
            self._worker_lock.acquire()
        with self.transaction() as db:
            return db.execute("UPDATE jobs SET state = 'ready' WHERE state = 'running'").rowcount

    def replay(self, queue: str, *, fifo: bool, job_id: str | None = None) -> list[str]:
        """Move dead jobs (all, or the one ``job_id``) back to the end of the queue, oldest first,
        with fresh sequence numbers."""
        now = time.time()
        only = "" if job_id is None else " AND id = ?"
        with self.transaction() as db:
            rows = db.execute(
                f"SELECT ord, {_COLUMNS} FROM jobs WHERE queue = ? AND state = 'dead'{only} ORDER BY ord",
                (queue,) if job_id is None else (queue, job_id),
            ).fetchall()
            for row in rows:
                job = _row(row[1:])
                seq = None
                if fifo and job.group_id is not None:
                    db.execute(
                        "UPDATE group_seq SET last = last + 1 WHERE queue = ? AND group_id = ?", (queue, job.group_id)
                    )
                    (seq,) = db.execute(
                        "SELECT last FROM group_seq WHERE queue = ? AND group_id = ?", (queue, job.group_id)
                    ).fetchone()
                db.execute("DELETE FROM jobs WHERE ord = ?", (row[0],))
                db.execute(
                    "INSERT INTO jobs (id, queue, group_id, group_seq, data, attributes, state, available_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'ready', ?)",
                    (job.id, queue, job.group_id, seq, job.data, json.dumps(job.attributes), now),
                )
            self._pending += len(rows)
        return [str(r[1]) for r in rows]

    def discard(self, queue: str, job_id: str | None = None) -> int:
        """Delete dead jobs of ``queue`` (all, or the one ``job_id``) for good; returns how many."""
        only = "" if job_id is None else " AND id = ?"
        with self.transaction() as db:
            return db.execute(
                f"DELETE FROM jobs WHERE queue = ? AND state = 'dead'{only}",
                (queue,) if job_id is None else (queue, job_id),
            ).rowcount

    # -- reads ------------------------------------------------------------------------------
    def dead(self, queue: str) -> list[StoredJob]:
        with self.lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE queue = ? AND state = 'dead' ORDER BY ord", (queue,)
            ).fetchall()
        return [_row(r) for r in rows]

    def pending_count(self) -> int:
        with self.lock:
            if not self._shared:
                return int(self._pending)
            # A state file may be shared (``queuerun push`` from another terminal): ask the database.
            (n,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('ready', 'running')").fetchone()
            return int(n)

    def next_available(self) -> float | None:
        with self.lock:
            (at,) = self._db.execute("SELECT MIN(available_at) FROM jobs WHERE state = 'ready'").fetchone()
        return None if at is None else float(at)

    # -- dedupe records -----------------------------------------------------------------------
    def dedupe_store(self) -> DedupeStore:
        return _SqliteDedupeStore(self)


class _SqliteDedupeStore(DedupeStore):
    def __init__(self, store: JobStore) -> None:
        self._store = store

    def _create(self, key: str, record: DedupeRecord) -> bool:
        with self._store.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO dedupe (key, token, created_at, expires_at, job_id) VALUES (?, ?, ?, ?, ?)",
                (key, record.token, record.created_at, record.expires_at, record.job_id),
            )
            return cur.rowcount == 1

    def _get(self, key: str) -> DedupeRecord | None:
        with self._store.lock:
            row = self._store._db.execute(
                "SELECT token, created_at, expires_at, job_id FROM dedupe WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return DedupeRecord(token=row[0], created_at=row[1], expires_at=row[2], job_id=row[3])

    def _replace(self, key: str, expected: DedupeRecord, record: DedupeRecord) -> bool:
        with self._store.transaction() as db:
            cur = db.execute(
                "UPDATE dedupe SET token = ?, created_at = ?, expires_at = ?, job_id = ? WHERE key = ? AND token = ?",
                (record.token, record.created_at, record.expires_at, record.job_id, key, expected.token),
            )
            return cur.rowcount == 1

    def _set_job(self, key: str, token: str, job_id: str) -> None:
        with self._store.transaction() as db:
            db.execute("UPDATE dedupe SET job_id = ? WHERE key = ? AND token = ?", (job_id, key, token))

    def _delete(self, key: str, token: str) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM dedupe WHERE key = ? AND token = ?", (key, token))
