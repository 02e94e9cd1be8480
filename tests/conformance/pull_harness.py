"""Pull delivery in the conformance suite: the emulators, pull subscriptions, the pull worker.

Every queue of the scenario's app is declared again as ``delivery="pull", exactly_once=True``
(the strictest pull setting), so the same scenarios run through streaming pull and exactly-once
acknowledgements instead of pushes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from queuerun import App
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.emulators import Emulator, reset_firestore
from queuerun.worker import PullWorker

from .harness import Harness, Running

NO_PUSH = "http://127.0.0.1:9"  # pull subscriptions never call it


@dataclass(frozen=True)
class PullHarness(Harness):
    env: Mapping[str, str] = field(default_factory=dict)
    project: str = ""
    pubsub_host: str = ""
    firestore: Emulator | None = None

    def run(self, app: App) -> AbstractContextManager[Running]:
        return self._run(app)

    @contextmanager
    def _run(self, app: App) -> Iterator[Running]:
        # The emulator numbers a re-created topic's messages from 1 again, so another harness's run of
        # the same example app left completion records under the same (topic, message id): without
        # this, exactly-once jobs would be acknowledged as "already done" (never so in production).
        if self.firestore is not None:
            reset_firestore(self.firestore)
        declared = app._specs
        # Put back afterwards: the examples' apps are module-level objects other tests use as declared.
        app._specs = {n: dataclasses.replace(s, delivery="pull", exactly_once=True) for n, s in declared.items()}
        try:
            app.use_settings({**self.env, "QUEUERUN_BACKEND": "gcp"})
            ensure_topology(app, project=self.project, push_base_url=NO_PUSH, emulator_host=self.pubsub_host)
            worker = PullWorker(app).start()
            try:
                yield app.backend
            finally:
                worker.stop(grace=1)
                app.backend.stop()
                delete_topology(app, project=self.project, emulator_host=self.pubsub_host)
        finally:
            app._specs = declared
            if self.firestore is not None:
                reset_firestore(self.firestore)
