"""Who reaches what: per-queue ``public``, the development switches and where they are refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.endpoint import AppHttp, HttpRequest
from queuerun.errors import AuthenticationError, ConfigurationError
from queuerun.hosting import anonymous_allowed, managed_host
from queuerun.invoker import cloud_run_invoker
from queuerun.settings import Settings

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


# -- who is calling an IAM-protected service (access="iam"/"private") --------------------------------

STRIPPED = "SIGNATURE_REMOVED_BY_GOOGLE"


def _checked_token(**claims: Any) -> str:
    """A token as Cloud Run forwards one it checked: header.payload.SIGNATURE_REMOVED_BY_GOOGLE."""
    now = int(time.time())
    body = {"iss": "https://accounts.google.com", "aud": "https://x.run.app", "iat": now, "exp": now + 3600}
    body |= {"email": "web@p.iam.gserviceaccount.com", "email_verified": True, **claims}
    return f"{_segment({'alg': 'RS256', 'typ': 'JWT'})}.{_segment(body)}.{STRIPPED}"


def _segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


# What the component sets on an IAM-protected service (the backend is beside the point here).
IAM_SETTINGS = Settings(push_auth="cloud-run-iam", cloud_run_service="sync")


def test_behind_cloud_run_iam_the_checked_caller_reaches_a_non_public_queue() -> None:
    app, seen = build()
    app.use_settings(IAM_SETTINGS)
    with app.local() as local, TestClient(AppHttp(app, allow_anonymous=False)) as client:
        res = client.post("/closed", json=1, headers={"authorization": f"Bearer {_checked_token()}"})
        local.drain(timeout=10)
    assert res.status_code == 202, res.text
    assert seen == [("closed", 1, "web@p.iam.gserviceaccount.com")]


def test_without_cloud_run_iam_in_front_a_checked_looking_token_is_nobody() -> None:
    """A public service: nothing checked the token, so anyone could have written it."""
    app, seen = build()
    app.use_settings(Settings(push_auth="verify", cloud_run_service="shop"))  # the component's public setting
    with app.local(), TestClient(AppHttp(app, allow_anonymous=False)) as client:
        res = client.post("/closed", json=1, headers={"authorization": f"Bearer {_checked_token()}"})
    assert res.status_code == 401
    assert seen == []


def test_two_checked_looking_tokens_are_refused_not_guessed_between() -> None:
    """Cloud Run checks one of Authorization / X-Serverless-Authorization; the caller wrote the other."""
    headers = {
        "authorization": f"Bearer {_checked_token(email='ceo@example.com')}",
        "x-serverless-authorization": f"Bearer {_checked_token()}",
    }
    with pytest.raises(AuthenticationError, match="cannot tell which one Cloud Run checked"):
        cloud_run_invoker(headers)


def test_the_app_s_own_bearer_token_beside_the_checked_one_does_not_confuse_the_caller() -> None:
    headers = {"authorization": "Bearer app-session-123", "x-serverless-authorization": f"Bearer {_checked_token()}"}
    assert cloud_run_invoker(headers) == "web@p.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"email_verified": False}, "no verified email"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
        ({"exp": int(time.time()) + 86_400}, "lifetime"),
    ],
)
def test_a_checked_token_with_claims_no_google_token_has_is_refused(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(AuthenticationError, match=reason):
        cloud_run_invoker({"authorization": f"Bearer {_checked_token(**claims)}"})


def test_google_id_token_hook_leaves_a_cloud_run_checked_token_to_the_invoker_rule() -> None:
    """access="iam" with the ready hook: the hook cannot verify a stripped token, so the invoker is the user."""
    from queuerun.auth import google_id_token

    app, seen = build(google_id_token("client-id.apps.googleusercontent.com", request=_no_certs))
    app.use_settings(IAM_SETTINGS)
    with app.local() as local, TestClient(AppHttp(app, allow_anonymous=False)) as client:
        res = client.post("/closed", json=1, headers={"authorization": f"Bearer {_checked_token()}"})
        local.drain(timeout=10)
    assert res.status_code == 202, res.text
    assert seen == [("closed", 1, "web@p.iam.gserviceaccount.com")]


def _no_certs(url: str, method: str = "GET", *, timeout: float | None = None) -> Any:
    raise AssertionError("a token Cloud Run checked is never verified against Google's certificates")
