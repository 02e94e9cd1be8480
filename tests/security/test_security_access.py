"""Who reaches what: per-queue ``public``, the development switches and where they are refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.endpoint import AppHttp, HttpRequest
from queuerun.errors import ConfigurationError
from queuerun.hosting import anonymous_allowed, managed_host

Seen = list[tuple[str, Any, str | None]]


def build(authenticate: Any = None) -> tuple[App, Seen]:
    app = App("gate", authenticate=authenticate)
    seen: Seen = []

    @app.queue("open", http=True, public=True)
    def open_(payload: Any, meta: JobMetadata) -> None:
        seen.append(("open", payload, meta.user))

    @app.queue("closed", http=True)
    def closed(payload: Any, meta: JobMetadata) -> None:
        seen.append(("closed", payload, meta.user))

    return app, seen


def token_hook(request: HttpRequest) -> str | None:
    return "alice" if request.headers.get("authorization") == "Bearer alice" else None


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Seen, Any]]:
    monkeypatch.delenv("QUEUERUN_ALLOW_ANONYMOUS", raising=False)
    app, seen = build(token_hook)
    with app.local() as local, TestClient(AppHttp(app)) as client:
        yield client, seen, local


def test_an_anonymous_post_never_runs_a_queue_not_declared_public(gate: tuple[TestClient, Seen, Any]) -> None:
    client, seen, local = gate
    res = client.post("/closed", json={"x": 1})
    local.drain(timeout=10)
    assert res.status_code == 401
    assert "closed" in res.json()["error"] and "public" in res.json()["error"]
    assert seen == []


def test_another_queue_being_public_opens_only_that_queue(gate: tuple[TestClient, Seen, Any]) -> None:
    client, seen, local = gate
    assert client.post("/open", json=1).status_code == 202
    assert client.post("/closed", json=2).status_code == 401
    local.drain(timeout=10)
    assert seen == [("open", 1, None)]


def test_a_signed_in_user_reaches_a_non_public_queue(gate: tuple[TestClient, Seen, Any]) -> None:
    client, seen, local = gate
    res = client.post("/closed", json=3, headers={"authorization": "Bearer alice"})
    local.drain(timeout=10)
    assert res.status_code == 202
    assert seen == [("closed", 3, "alice")]


def test_without_a_hook_only_public_queues_take_posts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUEUERUN_ALLOW_ANONYMOUS", raising=False)
    app, seen = build()
    with app.local() as local, TestClient(AppHttp(app)) as client:
        assert client.post("/closed", json=1).status_code == 401
        assert client.post("/open", json=2).status_code == 202
        local.drain(timeout=10)
    assert seen == [("open", 2, None)]


def test_the_queue_level_asgi_app_honours_public_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUEUERUN_ALLOW_ANONYMOUS", raising=False)
    app, seen = build()
    with app.local(), TestClient(app.queues("closed").http) as client:
        assert client.post("/", json=1).status_code == 401
    assert seen == []


def test_the_development_switch_lets_anonymous_posts_through_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for marker in ("K_SERVICE", "KUBERNETES_SERVICE_HOST", "CLOUD_RUN_JOB", "GAE_SERVICE"):
        monkeypatch.delenv(marker, raising=False)
    monkeypatch.setenv("QUEUERUN_ALLOW_ANONYMOUS", "1")
    app, seen = build()
    with app.local() as local, TestClient(AppHttp(app)) as client:
        assert client.post("/closed", json=1).status_code == 202
        local.drain(timeout=10)
    assert seen == [("closed", 1, None)]
    assert "QUEUERUN_ALLOW_ANONYMOUS is set" in caplog.text


@pytest.mark.parametrize("marker", ["K_SERVICE", "KUBERNETES_SERVICE_HOST", "GAE_SERVICE"])
def test_the_development_switch_is_refused_on_a_managed_host(marker: str) -> None:
    with pytest.raises(ConfigurationError, match="QUEUERUN_ALLOW_ANONYMOUS is refused on a managed host"):
        anonymous_allowed({"QUEUERUN_ALLOW_ANONYMOUS": "1", marker: "x"})


def test_a_developer_machine_is_not_a_managed_host() -> None:
    assert managed_host({"HOME": "/home/dev", "PATH": "/usr/bin"}) is None
    assert managed_host({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "KUBERNETES_SERVICE_HOST='10.0.0.1'"
