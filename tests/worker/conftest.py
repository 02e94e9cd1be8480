"""Pull-worker tests: apps on the emulators, their pull queues consumed by a PullWorker in this process."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from emulators import Emulator

from queuerun import App
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.worker import PullWorker


@pytest.fixture
def new_app(emulator_env: dict[str, str]) -> Callable[[], App]:
    def make() -> App:
        return App(f"w{uuid.uuid4().hex[:10]}", settings={**emulator_env, "QUEUERUN_BACKEND": "gcp"})

    return make


@pytest.fixture
def topology(pubsub_emulator: Emulator) -> Iterator[Callable[[App], None]]:
    """Create an app's topics and subscriptions on the emulator (pull queues get pull subscriptions)."""
    made: list[App] = []

    def make(app: App) -> None:
        # No push server runs in these tests: pull queues need none, and the URL is never called.
        ensure_topology(
            app, project=pubsub_emulator.project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub_emulator.host
        )
        made.append(app)

    yield make
    for app in made:
        app.backend.stop()
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)


@pytest.fixture
def pull(topology: Callable[[App], None]) -> Iterator[Callable[..., PullWorker]]:
    """Create the app's topology and start a worker on its pull queues; stopped at the end of the test."""
    workers: list[PullWorker] = []

    def start(app: App, **options: object) -> PullWorker:
        topology(app)
        worker = PullWorker(app, **options).start()  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(grace=1)
