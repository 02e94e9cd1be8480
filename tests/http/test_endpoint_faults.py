"""Faults behind the endpoint: the client gets a clear 503 (or nothing queued), never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from starlette.testclient import TestClient

from queuerun import App, QueueNotFoundError
from queuerun.backends.embedded import EmbeddedBackend
from queuerun.endpoint import AppHttp
from queuerun.spec import QueueSpec
from queuerun.wire import OutgoingJob


class MissingTopicBackend(EmbeddedBackend):
    """The queue's topic was never provisioned."""

    def _publish(self, spec: QueueSpec, jobs: Sequence[OutgoingJob]) -> list[str | BaseException]:
        raise QueueNotFoundError(spec.name)


class BrokenStoreBackend(EmbeddedBackend):
    """Publishing itself blows up with something that is not ours."""

    def _publish(self, spec: QueueSpec, jobs: Sequence[OutgoingJob]) -> list[str | BaseException]:
        raise ConnectionResetError("store went away")


def _app() -> App:
    app = App("faults")

    @app.queue("tasks", http=True, public=True)
    def tasks(payload: Any) -> None: ...

    return app


def test_missing_topic_is_a_503_with_a_message() -> None:
    app = _app()
    app.use_backend(MissingTopicBackend())
    with TestClient(AppHttp(app)) as client:
        res = client.post("/tasks", json={"a": 1})
    assert res.status_code == 503 and res.headers["retry-after"] == "1"
    assert "'tasks': the job was not queued, try again" in res.json()["error"]


def test_an_unexpected_store_error_is_a_503_not_a_500() -> None:
    app = _app()
    app.use_backend(BrokenStoreBackend())
    with TestClient(AppHttp(app), raise_server_exceptions=True) as client:
        res = client.post("/tasks", json={"a": 1})
    assert res.status_code == 503
    # The cause is logged, never told: a store's error can name the project, topic paths or accounts.
    assert res.json()["error"] == "queue 'tasks': the job was not queued, try again"


def test_a_client_that_disconnects_mid_body_queues_nothing() -> None:
    app = _app()
    backend = EmbeddedBackend()
    app.use_backend(backend)
    sent: list[dict[str, Any]] = []
    messages = iter(
        [
            {"type": "http.request", "body": b"half of a ", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "POST", "path": "/tasks", "headers": [(b"content-type", b"text/plain")]}
    asyncio.run(AppHttp(app)(scope, receive, send))
    assert sent == []
    assert backend.store.pending_count() == 0


def test_a_failed_dedupe_confirm_does_not_fail_a_queued_push() -> None:
    app = App("confirm")

    @app.queue("orders.fifo")
    def orders(payload: Any) -> None: ...

    backend = EmbeddedBackend()

    def broken(*args: Any) -> None:
        raise ConnectionError("dedupe store unavailable")

    backend.dedupe._set_job = broken  # type: ignore[method-assign]
    app.use_backend(backend)
    job_id = orders.group("g").dedupe("d").push("x")
    assert isinstance(job_id, str) and backend.store.pending_count() == 1
