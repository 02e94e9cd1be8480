"""Messages that cannot become jobs, published with the raw client, on the emulators: each is
dead-lettered once with the reason, and the jobs after it in its FIFO group still run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from emulators import Emulator
from gcp_helpers import Calls

from queuerun import App, JobMetadata
from queuerun.backends.base import DeadLetter
from queuerun.backends.gcp import GcpBackend, make_publisher
from queuerun.server.serve import BackgroundServer

pytestmark = pytest.mark.emulators

Serve = Callable[[App], BackgroundServer]
TAGGED = "application/vnd.queuerun+json"


def _backend(app: App) -> GcpBackend:
    backend = app.backend
    assert isinstance(backend, GcpBackend)
    return backend


def _wait_for_dead_letters(app: App, queue: str, count: int, timeout: float = 60.0) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout
    while True:
        dead = _backend(app).dead_letters(queue)
        if len(dead) >= count or time.monotonic() > deadline:
            return dead
        time.sleep(0.2)  # polling the dead-letter subscription: no event to wait on


def _publish_raw(pubsub: Emulator, topic: str, messages: list[tuple[bytes, dict[str, str]]], key: str = "") -> None:
    publisher = make_publisher(emulator_host=pubsub.host)
    try:
        for data, attrs in messages:
            publisher.publish(topic, data, ordering_key=key, **attrs).result(timeout=30)
    finally:
        publisher.stop()


def test_poison_messages_in_a_fifo_group_are_dead_lettered_once_and_the_group_moves_on(
    new_app: Callable[[], App], serve: Serve, pubsub_emulator: Emulator
) -> None:
    app = new_app()
    calls = Calls()

    @app.queue("orders.fifo")
    def handle(job: Any, meta: JobMetadata) -> None:
        calls.add(job)

    serve(app)
    group = {"qr-group": "g", "qr-queue": "orders.fifo"}
    poison = [
        (b"[" * 50_000 + b"]" * 50_000, {**group, "qr-content-type": "application/json"}),  # RecursionError
        (b'{"$queuerun": "bytes", "base64": 5}', {**group, "qr-content-type": TAGGED}),  # TypeError
        (b"{}", {**group, "qr-content-type": "application/json", "qr-seq": "not-a-number"}),
    ]
    _publish_raw(pubsub_emulator, _backend(app).topic_path("orders.fifo"), poison, key="g")
    for i in range(3):
        handle.group("g").push(i)

    assert calls.wait_for(lambda items: len(items) >= 3, timeout=60) == [0, 1, 2]
    dead = _wait_for_dead_letters(app, "orders.fifo", 3)
    assert len(dead) == 3
    assert all("cannot become a job" in d.error and d.attempts == 1 for d in dead), [d.error for d in dead]


def test_foreign_messages_follow_the_rule_json_runs_anything_else_is_dead_lettered(
    new_app: Callable[[], App], serve: Serve, pubsub_emulator: Emulator
) -> None:
    app = new_app()
    calls = Calls()

    @app.queue("events")
    def handle(job: Any, meta: JobMetadata) -> None:
        calls.add((job, meta.queued_at is not None))

    serve(app)
    _publish_raw(
        pubsub_emulator,
        _backend(app).topic_path("events"),
        [(b'{"from": "gcloud"}', {}), (b"plain words", {"origin": "other-tool"})],
    )
    assert calls.wait_for(lambda items: len(items) >= 1, timeout=60) == [({"from": "gcloud"}, True)]
    [dead] = _wait_for_dead_letters(app, "events", 1)
    assert "not JSON" in dead.error and dead.payload == b"plain words"


def test_dead_letter_listing_shows_every_message_large_or_malformed(
    new_app: Callable[[], App], serve: Serve, pubsub_emulator: Emulator
) -> None:
    # Given dead letters over gRPC's default 4 MiB receive limit, together over 10 MB, and one
    # whose attributes queuerun cannot read
    app = new_app()
    app.queue("big")(lambda job: None)
    serve(app)
    big = b'"' + b"x" * 4_500_000 + b'"'
    attrs = {"qr-content-type": "application/json", "qr-error": "boom", "qr-attempts": "5"}
    _publish_raw(
        pubsub_emulator,
        _backend(app).dead_letter_topic_path("big"),
        [(big, attrs), (big, attrs), (big, attrs), (b"{}", {**attrs, "qr-queued-at": "not a time"})],
    )
    # When they are listed (twice: listing leaves them in place)
    for _ in range(2):
        dead = _wait_for_dead_letters(app, "big", 4)
        # Then every one is there, the malformed one marked with the reason and shown raw
        assert sorted(len(d.payload) if isinstance(d.payload, bytes | str) else 0 for d in dead) == [
            2, 4_500_000, 4_500_000, 4_500_000
        ]
        [bad] = [d for d in dead if d.undecodable]
        assert "qr-queued-at" in bad.undecodable and bad.payload == b"{}" and bad.error == "boom"


def test_a_job_answered_503_is_logged_with_the_reason_on_the_dev_console(
    new_app: Callable[[], App], caplog: pytest.LogCaptureFixture
) -> None:
    import base64
    import json
    import logging

    from starlette.testclient import TestClient

    from queuerun.emulator_dev import _JobLine
    from queuerun.server.app import PushServer

    # Given an app whose dead-letter topic does not exist (never deployed)
    app = new_app()
    app.queue("events")(lambda job: None)
    body = {
        "message": {
            "data": base64.b64encode(b"not json").decode(),
            "attributes": {"qr-content-type": "application/json"},
            "messageId": "77",
            "publishTime": "2024-05-01T12:00:00Z",
        },
        "subscription": "projects/p/subscriptions/s",
    }
    # When a message that must be dead-lettered arrives
    with caplog.at_level(logging.INFO, logger="queuerun.server"), TestClient(PushServer(app).asgi()) as client:
        response = client.post("/_pubsub/events", content=json.dumps(body))
    _backend(app).stop()
    # Then it is answered 503 (Pub/Sub will try again) and the dev console's line says why
    assert response.status_code == 503
    [record] = [r for r in caplog.records if getattr(r, "job_id", None) == "77"]
    line = _JobLine().format(record)
    assert "attempt=None" not in line and " 0ms" not in line, line
    assert "job=77 attempt=1" in line and "503" in line and "NotFound" in line, line
