"""The emulator drops some messages after failed push deliveries; the dev server's watch reports
every one of them, so each pushed job either completes or is named as lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from emulators import Emulator
from gcp_helpers import Calls

from queuerun import App, JobMetadata
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.server.redelivery import RedeliveryWatch
from queuerun.server.serve import BackgroundServer

pytestmark = pytest.mark.emulators


def test_every_job_failing_twice_either_completes_or_is_reported_lost(
    new_app: Callable[[], App], pubsub_emulator: Emulator
) -> None:
    app = new_app()
    done = Calls()

    @app.queue("flaky", min_backoff=0, max_backoff=1)
    def handle(job: Any, meta: JobMetadata) -> None:
        if meta.received_count <= 2:
            raise RuntimeError(f"failure {meta.received_count}")
        done.add(meta.job_id)

    watch = RedeliveryWatch(grace=10)
    server = BackgroundServer(app, push_options={"redelivery": watch}).start()
    ensure_topology(app, project=pubsub_emulator.project, push_base_url=server.url, emulator_host=pubsub_emulator.host)
    try:
        pushed = {handle.push({"n": i}) for i in range(10)}
        lost: set[str] = set()
        deadline = time.monotonic() + 120
        while set(done.items) | lost != pushed:
            assert time.monotonic() < deadline, (len(pushed), len(set(done.items)), len(lost))
            lost |= {item.job_id for item in watch.overdue()}
            time.sleep(0.5)  # the watch is polled, as the dev server does every second
        print(f"\npushed={len(pushed)} completed={len(set(done.items))} reported lost={len(lost)}")
        assert not (set(done.items) & lost)
    finally:
        server.stop()
        app.backend.stop()
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)
