"""The Google Cloud backend in the conformance suite: the emulators, the push server on loopback,
and topics and push subscriptions built from the app's declarations."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from queuerun import App
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.server.serve import BackgroundServer

from .harness import Harness, Running


@dataclass(frozen=True)
class GcpHarness(Harness):
    env: Mapping[str, str] = field(default_factory=dict)
    project: str = ""
    pubsub_host: str = ""

    def run(self, app: App) -> AbstractContextManager[Running]:
        return self._run(app)

    @contextmanager
    def _run(self, app: App) -> Iterator[Running]:
        # The emulator sends no OIDC token, so push verification is off, as only there it may be.
        app.use_settings({**self.env, "QUEUERUN_BACKEND": "gcp", "QUEUERUN_INSECURE_PUSH": "1"})
        server = BackgroundServer(app).start()
        try:
            ensure_topology(app, project=self.project, push_base_url=server.url, emulator_host=self.pubsub_host)
            yield app.backend
        finally:
            server.stop()
            app.backend.stop()
            delete_topology(app, project=self.project, emulator_host=self.pubsub_host)
