"""Helpers for the Google Cloud backend tests: apps on the emulators, served by the push server."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from emulators import Emulator

from queuerun import App
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.server.serve import BackgroundServer


def unique_app_name() -> str:
    """A fresh app name per test: topics on the shared emulator never collide."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def gcp_settings(emulator_env: dict[str, str]) -> dict[str, str]:
    """Settings for an app on the emulators, push verification off (the emulator sends no token)."""
    return {**emulator_env, "QUEUERUN_BACKEND": "gcp", "QUEUERUN_INSECURE_PUSH": "1"}


@pytest.fixture
def new_app(gcp_settings: dict[str, str]) -> Callable[[], App]:
    def make() -> App:
        return App(unique_app_name(), settings=gcp_settings)

    return make


@pytest.fixture
def serve(pubsub_emulator: Emulator) -> Iterator[Callable[[App], BackgroundServer]]:
    """Serve an app on a loopback port and create its topology on the emulator, pushing to it."""
    started: list[tuple[App, BackgroundServer]] = []

    def run(app: App) -> BackgroundServer:
        server = BackgroundServer(app).start()
        started.append((app, server))
        ensure_topology(
            app, project=pubsub_emulator.project, push_base_url=server.url, emulator_host=pubsub_emulator.host
        )
        return server

    yield run
    for app, server in started:
        server.stop()
        app.backend.stop()
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)
