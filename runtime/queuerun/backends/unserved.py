"""The default backend of a process with no workers and no state file: it pushes to ``queuerun dev``.

Outside ``app.local()`` the embedded backend would keep jobs in this process's memory, where no
worker runs them: a push would return an id for a job that never runs. Instead, each push looks
for the ``queuerun dev`` of this app running from this folder (:mod:`queuerun.running_dev`) and
queues there (its state file, or its emulators); with none running, it refuses, saying how to get
a backend that runs the job. Looking at every push means a web app started before ``queuerun dev``
still finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import running_dev
from ..errors import PushError
from ..settings import ENV
from ..spec import QueueSpec
from ..wire import OutgoingJob
from .base import Backend
from .embedded import EmbeddedBackend

if TYPE_CHECKING:
    from ..app import App


class UnservedBackend(EmbeddedBackend):
    """In-memory embedded backend whose pushes go to the running ``queuerun dev``, or are refused."""

    def __init__(self, app: App | None) -> None:
        super().__init__()
        self._owner = app
        self._linked: tuple[tuple[int, str | None], Backend] | None = None  # ((pid, started), backend)

    def _dev_backend(self) -> Backend | None:
        from . import running_dev_backend

        running = running_dev.find(self._owner.name) if self._owner is not None else None
        if running is None or self._owner is None:
            return None
        key = (running.pid, running.started)
        if self._linked is None or self._linked[0] != key:
            if self._linked is not None:
                _close(self._linked[1])
            self._linked = (key, running_dev_backend(running, self._owner))
        return self._linked[1]

    def enqueue(self, spec: QueueSpec, jobs: Sequence[OutgoingJob]) -> list[str]:
        if self._thread is not None:  # someone started workers here: an ordinary in-memory backend
            return super().enqueue(spec, jobs)
        linked = self._dev_backend()
        if linked is not None:
            return linked.enqueue(spec, jobs)
        app = f" of app {self._owner.name!r}" if self._owner is not None else ""
        raise PushError(
            f"queue {spec.name!r}: job not queued: no worker would run it (no `queuerun dev`{app} runs "
            "from this folder). Start `queuerun dev MODULE:APP` here and push again (pushes then go to its "
            f"queue), push inside `with app.local():`, or set {ENV.BACKEND}=gcp"
        )

    def close(self) -> None:
        if self._linked is not None:
            _close(self._linked[1])
            self._linked = None
        super().close()


def _close(backend: Backend) -> None:
    """Release what a backend holds (the embedded one's SQLite connection, gcp's clients)."""
    getattr(backend, "close", backend.stop)()
