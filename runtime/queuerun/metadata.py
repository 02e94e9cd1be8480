"""What a handler learns about the job it runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field


class JobSignal:
    """Set when the job times out. Sync handlers poll ``aborted`` or ``wait()``; async ones are cancelled."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    @property
    def aborted(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until aborted (True) or ``timeout`` passes (False)."""
        return self._event.wait(timeout)

    async def wait_async(self, poll: float = 0.05) -> None:
        # The event is a threading.Event (sync handlers wait on it too), so async code polls it.
        while not self._event.is_set():  # noqa: ASYNC110
            await asyncio.sleep(poll)

    def abort(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def __repr__(self) -> str:
        return f"JobSignal(aborted={self.aborted})"


@dataclass(frozen=True)
class JobMetadata:
    """Metadata passed as the handler's second argument.

    ``sequence_number`` (FIFO only) strictly increases within a group in delivery order and is
    stable across redeliveries; ``received_count`` is 1 on the first delivery. ``job_id``,
    ``queued_at``, ``group_id`` and ``sequence_number`` are the same on every delivery of a job,
    also a rerun after a crash, so a handler can key its effects on ``job_id`` to be idempotent.
    """

    job_id: str
    queue_name: str
    queued_at: dt.datetime
    received_count: int
    group_id: str | None = None
    sequence_number: int | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    signal: JobSignal = field(default_factory=JobSignal, compare=False)
