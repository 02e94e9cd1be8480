"""The default backend of a process with no workers and no ``queuerun dev`` to push to.

Outside ``app.local()`` the embedded backend would keep jobs in this process's memory, where no
worker runs them: a push would return an id for a job that never runs. It refuses instead, saying
how to get a backend that runs it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import PushError
from ..settings import ENV
from ..spec import QueueSpec
from ..wire import OutgoingJob
from .embedded import EmbeddedBackend


class UnservedBackend(EmbeddedBackend):
    """In-memory embedded backend that refuses pushes until its workers are started."""

    def __init__(self, app_name: str | None) -> None:
        super().__init__()
        self._app_name = app_name

    def enqueue(self, spec: QueueSpec, jobs: Sequence[OutgoingJob]) -> list[str]:
        if self._thread is None:
            app = f" of app {self._app_name!r}" if self._app_name else ""
            raise PushError(
                f"queue {spec.name!r}: job not queued: no worker would run it (no `queuerun dev`{app} runs "
                "from this folder). Start `queuerun dev MODULE:APP` here and push again (pushes then go to its "
                f"queue), push inside `with app.local():`, or set {ENV.BACKEND}=gcp"
            )
        return super().enqueue(spec, jobs)
