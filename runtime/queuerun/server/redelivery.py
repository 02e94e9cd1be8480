"""Which deliveries the dev server makes itself, for ``queuerun dev --emulators``.

The Pub/Sub emulator drops messages after failed push deliveries (measured: of 20 messages each
answered 500 twice, 12 never came back, with or without a dead-letter policy; and under ``kill -9``
of the push server, 12 of 30 messages pushed while it was down never arrived). Production Pub/Sub
redelivers until the message's retention ends. So the dev server keeps a copy of every job (see
:mod:`queuerun.emulator_ledger`) and, when the emulator has not delivered a job for too long,
delivers that job itself; from then on it is the only one that does.

This module is the bookkeeping, without I/O: the push server reports each delivery's start, nack
and end; the ledger asks which jobs are due and claims them. A claimed job's own deliveries carry
``REDELIVERY_HEADER`` with the watch's token; a copy from the emulator of a claimed job is then not
run again (the push server acknowledges it, or holds it on a FIFO queue until the job settles).
"""

from __future__ import annotations

import collections
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_GRACE: Final = 60.0  # the emulator retries about once a second, at most 2 pushes in flight
REDELIVERY_HEADER: Final = "x-queuerun-redelivery"
MAX_TRACKED: Final = 100_000  # jobs followed at once; the oldest are forgotten beyond that


@dataclass
class _State:
    last: float  # the watch's clock: last arrival, nack or end of a delivery (or the claim)
    running: int = 0
    attempt: int = 0  # of the last nacked delivery; 0 if none was nacked
    nacked: bool = False
    owned: bool = False  # claimed: only the dev server's own deliveries run it
    pending: bool = False  # claimed, and its own delivery has not arrived yet


class RedeliveryWatch:
    """Deliveries in progress, nacked jobs waiting for Pub/Sub, and jobs the dev server took over.

    Thread-safe. ``backoff(attempt)`` passed to :meth:`claim` is the queue's retry delay after that
    attempt: a nacked job is due after the grace or twice that delay, whichever is longer (so a slow
    retry policy is not taken for a drop), and a claimed job after the delay alone.
    """

    def __init__(
        self, grace: float = DEFAULT_GRACE, clock: Callable[[], float] = time.monotonic, token: str | None = None
    ) -> None:
        self.grace = grace
        self.token = token or secrets.token_hex(16)
        self._clock = clock
        self._jobs: collections.OrderedDict[tuple[str, str], _State] = collections.OrderedDict()
        self._lock = threading.Lock()

    # -- reported by the push server ------------------------------------------------------------
    def arrived(self, queue: str, job_id: str, token: str | None) -> bool:
        """A delivery starts. False when it is a copy from Pub/Sub of a job the dev server took over:
        the caller must not run it."""
        own = token is not None and hmac.compare_digest(token.encode(), self.token.encode())
        with self._lock:
            key = (queue, job_id)
            state = self._jobs.get(key)
            if state is not None and state.owned and not own:
                return False
            if state is None:
                state = self._jobs[key] = _State(self._clock())
                while len(self._jobs) > MAX_TRACKED:
                    self._jobs.popitem(last=False)
            state.running += 1
            state.pending = state.pending and not own
            state.nacked = False
            state.last = self._clock()
            return True

    def nacked(self, queue: str, job_id: str, attempt: int) -> None:
        """The delivery failed: Pub/Sub (or, once claimed, the dev server) must deliver it again."""
        with self._lock:
            state = self._jobs.setdefault((queue, job_id), _State(self._clock()))
            state.nacked, state.attempt, state.last = True, attempt, self._clock()

    def finished(self, queue: str, job_id: str) -> None:
        """The delivery was answered. A job acknowledged and never claimed is forgotten."""
        with self._lock:
            state = self._jobs.get((queue, job_id))
            if state is None:
                return
            state.running = max(0, state.running - 1)
            state.last = self._clock()
            if not state.nacked and not state.owned and not state.running:
                del self._jobs[(queue, job_id)]

    # -- asked by the ledger --------------------------------------------------------------------
    def claim(self, queue: str, job_id: str, *, first_seen: float, backoff: Callable[[int], float]) -> int | None:
        """Take the job over if it is due: no delivery running or on its way, and none for the grace
        (counted from ``first_seen`` for a job never delivered). Returns the attempt of its last
        nacked delivery (0 if none) when claimed, else None."""
        now = self._clock()
        with self._lock:
            key = (queue, job_id)
            state = self._jobs.get(key)
            if state is None:
                if now - first_seen < self.grace:
                    return None
                state = self._jobs[key] = _State(now)
            else:
                if state.running or state.pending:
                    return None
                delay = backoff(state.attempt) if state.nacked else 0.0
                wait = delay if state.owned else max(self.grace, 2 * delay)
                if now - state.last < wait:
                    return None
            state.owned = state.pending = True
            state.last = now
            return state.attempt

    def released(self, queue: str, job_id: str) -> None:
        """The dev server's own delivery is over, or never arrived (the server was stopping)."""
        with self._lock:
            state = self._jobs.get((queue, job_id))
            if state is not None:
                state.pending = False

    def settled(self, queue: str, job_id: str) -> None:
        """The job has a completion record: nothing more to follow."""
        with self._lock:
            state = self._jobs.get((queue, job_id))
            if state is not None and not state.running and not state.owned:
                del self._jobs[(queue, job_id)]

    def owns(self, queue: str, job_id: str) -> bool:
        with self._lock:
            state = self._jobs.get((queue, job_id))
            return state is not None and state.owned
