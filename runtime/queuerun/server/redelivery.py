"""Nacked deliveries that must come back, for ``queuerun dev --emulators``.

The Pub/Sub emulator drops messages after failed push deliveries (measured: of 20 messages each
answered 500 twice, 12 never came back, with or without a dead-letter policy; pull subscriptions
redeliver every nacked message). Production Pub/Sub redelivers until the message's retention
ends. So the dev server remembers what it nacked and reports, loudly and by job id, what the
emulator has not redelivered within a grace period: work is never lost silently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_GRACE: Final = 60.0  # the emulator retries about once a second, at most 2 pushes in flight


@dataclass(frozen=True)
class Overdue:
    queue: str
    job_id: str
    attempt: int
    nacked_at: float  # the watch's clock


class RedeliveryWatch:
    """Which nacked (queue, job id) pairs are overdue for redelivery. Thread-safe; no I/O."""

    def __init__(self, grace: float = DEFAULT_GRACE, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self._clock = clock
        self._waiting: dict[tuple[str, str], tuple[int, float]] = {}
        self._lock = threading.Lock()

    def nacked(self, queue: str, job_id: str, attempt: int) -> None:
        with self._lock:
            self._waiting[(queue, job_id)] = (attempt, self._clock())

    def delivered(self, queue: str, job_id: str) -> None:
        with self._lock:
            self._waiting.pop((queue, job_id), None)

    def overdue(self) -> list[Overdue]:
        """The nacked jobs not redelivered within the grace period, each reported once."""
        now = self._clock()
        with self._lock:
            late = [(key, value) for key, value in self._waiting.items() if now - value[1] >= self.grace]
            for key, _ in late:
                del self._waiting[key]
        return [Overdue(queue, job_id, attempt, at) for (queue, job_id), (attempt, at) in late]
