"""The backend seam as the conformance suite sees it: run an app, drain it, read its dead letters.

A backend joins the suite by adding one ``Harness`` to ``HARNESSES`` in conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from queuerun import App, DeadLetter


class Running(Protocol):
    def drain(self, timeout: float | None = ..., *, fail_fast: bool = ...) -> None: ...
    def dead_letters(self, queue: str) -> list[DeadLetter]: ...
    def replay(self, queue: str) -> list[str]: ...


@dataclass(frozen=True)
class Harness:
    """How one backend runs an app. ``scale`` shrinks load tests for slow backends (the emulator)."""

    name: str
    scale: float
    # Retries on this backend take at least this long, whatever min_backoff says.
    retry_floor: float

    def run(self, app: App) -> AbstractContextManager[Running]:
        raise NotImplementedError


@dataclass(frozen=True)
class EmbeddedHarness(Harness):
    def run(self, app: App) -> AbstractContextManager[Running]:
        return _local(app)


@contextmanager
def _local(app: App) -> Iterator[Running]:
    with app.local() as local:
        yield local
