"""A queue's concurrency holds on push: a saturated instance turns the push away with 429 (a nack)."""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.testclient import TestClient

from queuerun import App
from queuerun.server.app import SATURATED_STATUS, PushServer

# Insecure push needs an emulator host (the emulator sends no token); nothing here connects to it (loopback).
SETTINGS = {"QUEUERUN_INSECURE_PUSH": "1", "GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": "127.0.0.1:9"}


def envelope(message_id: str, data: Any = "x") -> bytes:
    message = {
        "data": base64.b64encode(json.dumps(data).encode()).decode(),
        "attributes": {"qr-content-type": "application/json"},
        "messageId": message_id,
        "publishTime": "2024-05-01T12:00:00Z",
    }
    return json.dumps({"message": message, "subscription": "projects/p/subscriptions/s"}).encode()


def test_a_push_beyond_the_queues_concurrency_is_turned_away_and_counted_as_an_attempt() -> None:
    app = App("shop", settings=SETTINGS)
    started, release = threading.Event(), threading.Event()
    seen: list[tuple[str, int]] = []

    @app.queue("serial", concurrency=1)
    def serial(job: str, meta: Any) -> None:
        seen.append((meta.job_id, meta.received_count))
        started.set()
        release.wait(10)

    @app.queue("other", concurrency=1)
    def other(job: str) -> None:
        pass

    server = PushServer(app)
    server.slot_wait = 0.0  # answer at once (the default waits a few seconds for a slot)
    with TestClient(server.asgi()) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/_pubsub/serial", content=envelope("1"))
        assert started.wait(10)
        busy = client.post("/_pubsub/serial", content=envelope("2"))
        elsewhere = client.post("/_pubsub/other", content=envelope("3"))  # another queue's slots are its own
        release.set()
        assert first.result(10).status_code == 204
        again = client.post("/_pubsub/serial", content=envelope("2"))
    assert busy.status_code == SATURATED_STATUS == 429
    assert "concurrency=1" in busy.json()["error"] and "'serial'" in busy.json()["error"]
    assert elsewhere.status_code == 204
    assert again.status_code == 204
    # The turned-away push was delivery 1 of job 2, as Pub/Sub counts it.
    assert seen == [("1", 1), ("2", 2)]


def test_a_push_waits_for_a_slot_before_turning_away() -> None:
    app = App("shop", settings=SETTINGS)
    running, peak = [0], [0]
    lock = threading.Lock()
    first_started = threading.Event()

    @app.queue("serial", concurrency=1)
    def serial(job: str) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        first_started.set()
        threading.Event().wait(0.05)
        with lock:
            running[0] -= 1

    with TestClient(PushServer(app).asgi()) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: client.post("/_pubsub/serial", content=envelope(str(i))), range(4)))
    assert [a.status_code for a in answers] == [204] * 4
    assert peak[0] == 1
