"""``queuerun dev --emulators`` loses no job to the emulator's drops: its ledger (a pull subscription
holding a copy of every job until the job settles) delivers itself what the emulator does not."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from emulators import Emulator, free_port
from gcp_helpers import Calls

from queuerun import App, JobMetadata
from queuerun.emulator_ledger import Ledger, Recovery, delete_ledgers, ensure_ledgers
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.server.redelivery import RedeliveryWatch
from queuerun.server.serve import BackgroundServer

pytestmark = pytest.mark.emulators
GRACE = 3.0


@contextmanager
def dev_served(
    app: App, emulator: Emulator, *, push_to: str | None = None
) -> Iterator[tuple[BackgroundServer, list[Recovery]]]:
    """The app served as the dev server serves it; ``push_to`` points its subscriptions elsewhere."""
    watch = RedeliveryWatch(grace=GRACE)
    server = BackgroundServer(app, push_options={"redelivery": watch}).start()
    project, host = emulator.project, emulator.host
    ensure_topology(app, project=project, push_base_url=push_to or server.url, emulator_host=host)
    ensure_ledgers(app, project=project, emulator_host=host, lease=10)
    recoveries: list[Recovery] = []
    ledger = Ledger(
        app, watch, server.url, project=project, emulator_host=host, poll=0.2, lease=10, on_recovery=recoveries.append
    ).start()
    try:
        yield server, recoveries
    finally:
        ledger.stop()
        server.stop()
        app.backend.stop()
        delete_ledgers(app, project=project, emulator_host=host)
        delete_topology(app, project=project, emulator_host=host)


def test_jobs_the_emulator_cannot_push_run_once_each_with_their_ids_and_fifo_order(
    new_app: Callable[[], App], pubsub_emulator: Emulator
) -> None:
    app = new_app()
    calls = Calls()

    @app.queue("plain")
    def plain(job: Any, meta: JobMetadata) -> None:
        calls.add(("plain", meta.job_id, job["n"], meta.received_count))

    @app.queue("ordered.fifo")
    def ordered(job: Any, meta: JobMetadata) -> None:
        calls.add(("ordered.fifo", meta.job_id, job["n"], meta.received_count))

    # The subscriptions push to a port nobody listens on: the emulator delivers nothing.
    with dev_served(app, pubsub_emulator, push_to=f"http://127.0.0.1:{free_port()}") as (_, recoveries):
        pushed = {plain.push({"n": i}): ("plain", i) for i in range(3)}
        pushed |= {ordered.group("g").push({"n": i}): ("ordered.fifo", i) for i in range(3)}
        seen = calls.wait_for(lambda items: len(items) >= 6, timeout=60)
    assert sorted((q, job_id, n) for q, job_id, n, _ in seen) == sorted((q, j, n) for j, (q, n) in pushed.items())
    assert [n for q, _, n, _ in seen if q == "ordered.fifo"] == [0, 1, 2]
    assert {c[3] for c in seen} == {1}  # first delivery each: the attempt count is the server's
    assert {r.job_id for r in recoveries} == set(pushed)


def test_a_late_copy_from_the_emulator_of_a_recovered_job_is_acknowledged_without_running(
    new_app: Callable[[], App], pubsub_emulator: Emulator
) -> None:
    app = new_app()
    calls = Calls()

    @app.queue("plain")
    def plain(job: Any, meta: JobMetadata) -> None:
        calls.add(meta.job_id)

    with dev_served(app, pubsub_emulator, push_to=f"http://127.0.0.1:{free_port()}") as (server, recoveries):
        job_id = plain.push({"n": 1})
        calls.wait_for(lambda items: job_id in items, timeout=60)
        # What the emulator would send if it had kept the message after all (no dev-server token).
        envelope = {
            "message": {
                "data": base64.b64encode(b'{"n": 1}').decode(),
                "attributes": {"qr-content-type": "application/json"},
                "messageId": job_id,
                "publishTime": "2026-01-01T00:00:00Z",
            },
            "subscription": "projects/p/subscriptions/s",
        }
        request = urllib.request.Request(
            f"{server.url}/_pubsub/plain",
            data=json.dumps(envelope).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            status = response.status
    assert status == 204  # acknowledged, so the emulator stops delivering it
    assert calls.items == [job_id]  # and not run again
    assert [r.job_id for r in recoveries] == [job_id]


def test_every_job_failing_twice_completes_though_the_emulator_drops_some(
    new_app: Callable[[], App], pubsub_emulator: Emulator
) -> None:
    app = new_app()
    done = Calls()

    @app.queue("flaky", min_backoff=0, max_backoff=1)
    def handle(job: Any, meta: JobMetadata) -> None:
        if meta.received_count <= 2:
            raise RuntimeError(f"failure {meta.received_count}")
        done.add(meta.job_id)

    with dev_served(app, pubsub_emulator) as (_, recoveries):
        pushed = {handle.push({"n": i}) for i in range(10)}
        done.wait_for(lambda items: set(items) >= pushed, timeout=120)
    print(f"\npushed={len(pushed)} completed={len(set(done.items))} recovered={len(recoveries)}")
    assert sorted(done.items) == sorted(pushed)  # each exactly once
