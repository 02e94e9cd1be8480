"""``app.local()``: the embedded backend with workers in this process, for tests and the dev server."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .backends.base import Backend, DeadLetter, Progress
from .backends.embedded import EmbeddedBackend

if TYPE_CHECKING:
    from .app import App


class LocalRun:
    """While entered, the app pushes to an embedded backend whose workers run in this process.

    ``backoff=False`` runs a failed job's retry at once instead of after the queue's backoff, so a
    test of a job that fails twice drains in milliseconds; attempts and dead letters are unchanged.

    ``state_file`` keeps the jobs in that SQLite file (created 0600). One process at a time runs
    a state file's jobs: entering while another holds it raises ConfigurationError naming its pid.
    """

    def __init__(self, app: App, *, state_file: str | Path | None = None, backoff: bool = True) -> None:
        self.app = app
        self.backend = EmbeddedBackend(state_file=state_file, backoff=backoff)
        self._previous: Backend | None = None

    def __enter__(self) -> LocalRun:
        self._previous = self.app._backend
        self.app.use_backend(self.backend)
        try:
            self.backend.start(self.app)  # a state file another process works on refuses here
        except BaseException:
            self.backend.close()
            self.app.use_backend(self._previous)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.backend.close()
        self.app.use_backend(self._previous)

    def drain(self, timeout: float | None = 30.0, *, fail_fast: bool = False) -> None:
        """Return once no job is pending or running. ``fail_fast`` re-raises a handler's exception here."""
        self.backend.drain(timeout, fail_fast=fail_fast)

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """Jobs of ``queue`` that exhausted their attempts, oldest first."""
        self.app.spec(queue)  # unknown queue: QueueNotFoundError
        return self.backend.dead_letters(queue)

    def replay(self, queue: str, progress: Progress | None = None, *, job_id: str | None = None) -> list[str]:
        """Queue the dead letters of ``queue`` again (all, or only ``job_id``), keeping their order."""
        self.app.spec(queue)
        return self.backend.replay(queue, progress, job_id=job_id)
