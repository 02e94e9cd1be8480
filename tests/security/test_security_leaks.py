"""What answers give away, and headers that could be read two ways: scripted against servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from raw_http import raw_post
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.endpoint import AppHttp, HttpRequest, header_map
from queuerun.errors import PushError, RequestRejected
from queuerun.server.serve import BackgroundServer

SECRETS = ("secret-project-123", "projects/secret-project-123/topics", "runtime@secret-project-123.iam")


def _settings() -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": "secret-project-123",
        "QUEUERUN_INSECURE_PUSH": "1",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
    }


@pytest.fixture
def server() -> Iterator[str]:
    app = App("leaky", settings=_settings())

    @app.queue("tasks", http=True, public=True)
    def tasks(payload: Any, meta: JobMetadata) -> None: ...

    with app.local(), BackgroundServer(app) as running:
        yield running.url


def _client() -> httpx.Client:
    return httpx.Client(trust_env=False)  # loopback only: no proxy from the environment


def test_health_says_ok_and_nothing_else(server: str) -> None:
    with _client() as client:
        response = client.get(f"{server}/_health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_a_failed_push_answers_503_without_the_backend_s_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's error names the project's topic path and account: logged, never answered."""
    app = App("leaky", settings=_settings())

    @app.queue("tasks", http=True, public=True)
    def tasks(payload: Any, meta: JobMetadata) -> None: ...

    async def failing_apush(*args: Any, **kwargs: Any) -> str:
        raise PushError(f"Pub/Sub refused {SECRETS[1]}/leaky-tasks for {SECRETS[2]}gserviceaccount.com")

    monkeypatch.setattr(type(app.queues("tasks")), "apush", failing_apush)
    with TestClient(AppHttp(app)) as client:
        response = client.post("/tasks", json={"n": 1})
    assert response.status_code == 503
    assert not any(secret in response.text for secret in SECRETS)


def test_a_hook_returning_a_non_string_is_a_500_that_echoes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    session = {"user": "alice", "card": "4111 1111 1111 1111"}
    app = App("leaky", authenticate=lambda request: session)
    seen: list[Any] = []

    @app.queue("tasks", http=True)
    def tasks(payload: Any, meta: JobMetadata) -> None:
        seen.append(payload)

    with app.local() as local, TestClient(AppHttp(app)) as client:
        response = client.post("/tasks", json={"n": 1})
        local.drain(timeout=10)
    assert response.status_code == 500
    assert "4111" not in response.text and "alice" not in response.text and "dict" not in response.text
    assert "4111" not in caplog.text  # the log names the type, not the value
    assert "authenticate must return a user id string or None, got a dict" in caplog.text
    assert seen == []


# -- headers that two readers could resolve differently ---------------------------------------------


def test_header_map_refuses_a_second_authorization_and_joins_cookies() -> None:
    with pytest.raises(RequestRejected, match="more than one Authorization header"):
        header_map([("Authorization", "Bearer alice"), ("authorization", "Bearer mallory")])
    with pytest.raises(RequestRejected, match="X-Serverless-Authorization"):
        header_map([("X-Serverless-Authorization", "a"), ("x-serverless-authorization", "b")])
    assert header_map([("Cookie", "a=1"), ("cookie", "b=2")]) == {"cookie": "a=1; b=2"}


@pytest.fixture
def signed_in_server() -> Iterator[tuple[str, list[str | None]]]:
    def hook(request: HttpRequest) -> str | None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return {"alice-token": "alice", "mallory-token": "mallory"}.get(token)

    app = App("doubled", authenticate=hook, settings=_settings())
    users: list[str | None] = []

    @app.queue("tasks", http=True)
    def tasks(payload: Any, meta: JobMetadata) -> None:
        users.append(meta.user)

    with app.local() as local, BackgroundServer(app) as running:
        yield running.url, users
        local.drain(timeout=10)


def test_two_authorization_headers_on_a_queue_post_are_refused(signed_in_server: tuple[str, list[str | None]]) -> None:
    url, users = signed_in_server
    answer = raw_post(
        url, "/queues/tasks", [("Authorization", "Bearer alice-token"), ("Authorization", "Bearer mallory-token")]
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"more than one Authorization header" in answer
    assert users == []
