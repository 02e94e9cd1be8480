"""The ready ``google_id_token`` hook, through the ASGI test client, with tokens signed by a key made here."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from server.test_oidc import FakeCertsEndpoint, Key, _make_key, claims
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.auth import google_id_token
from queuerun.endpoint import AppHttp, HttpRequest
from queuerun.errors import AuthenticationError, ConfigurationError
from queuerun.server.oidc import GoogleCerts

CLIENT_ID = "1234-web.apps.googleusercontent.com"
KID = "google-kid"
ALICE = {"sub": "10769150350006150715113082367", "email": "alice@shop.example", "hd": "shop.example"}
ROBOT = "builder@shop-prod.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def google_key() -> Key:
    return _make_key()


@pytest.fixture
def endpoint(google_key: Key) -> FakeCertsEndpoint:
    return FakeCertsEndpoint({KID: google_key.cert_pem})


def token(key: Key, **overrides: Any) -> str:
    """A Google-style ID token for Alice and our client id; an override of None drops the claim."""
    return key.sign(claims(**{"aud": CLIENT_ID, **ALICE, **overrides}), kid=KID)


def bearer(key: Key, **overrides: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {token(key, **overrides)}"}


def serve(**hook_options: Any) -> Iterator[tuple[TestClient, list[JobMetadata]]]:
    app = App("web", authenticate=google_id_token(CLIENT_ID, **hook_options))
    seen: list[JobMetadata] = []

    @app.queue("tasks", http=True, public=True)
    def tasks(payload: Any, meta: JobMetadata) -> None:
        seen.append(meta)

    with app.local() as local, TestClient(AppHttp(app)) as client:
        client.drain = local.drain  # type: ignore[attr-defined]
        yield client, seen


@pytest.fixture
def web(endpoint: FakeCertsEndpoint) -> Iterator[tuple[TestClient, list[JobMetadata]]]:
    yield from serve(request=endpoint)


@pytest.fixture
def shop_only(endpoint: FakeCertsEndpoint) -> Iterator[tuple[TestClient, list[JobMetadata]]]:
    yield from serve(request=endpoint, allowed_domains=["shop.example", "shop-prod.iam.gserviceaccount.com"])


def test_a_valid_token_queues_the_job_as_its_user(web: tuple[TestClient, list[JobMetadata]], google_key: Key) -> None:
    client, seen = web
    res = client.post("/tasks", json={"n": 1}, headers=bearer(google_key))
    client.drain(timeout=10)  # type: ignore[attr-defined]
    assert res.status_code == 202, res.text
    assert [(m.job_id, m.user) for m in seen] == [(res.headers["x-job-id"], ALICE["sub"])]


def test_no_authorization_header_is_anonymous(web: tuple[TestClient, list[JobMetadata]]) -> None:
    client, seen = web
    res = client.post("/tasks", json={"n": 1})
    client.drain(timeout=10)  # type: ignore[attr-defined]
    assert res.status_code == 202, res.text
    assert [m.user for m in seen] == [None]


@pytest.mark.parametrize(
    ("authorization", "fragment"),
    [
        ("expired", "expired"),
        ("wrong-audience", "audience"),
        ("wrong-issuer", "issuer"),
        ("other-key", "signature"),
        ("Bearer not.a.jwt", "malformed ID token"),
        ("Bearer garbage", "malformed ID token"),
        ("Basic YWxpY2U6cHc=", "expected 'Bearer <Google ID token>'"),
        ("", "expected 'Bearer"),
        ("Bearer " + "x" * 20_000, "longer than"),
    ],
)
def test_bad_tokens_get_401(
    web: tuple[TestClient, list[JobMetadata]], google_key: Key, authorization: str, fragment: str
) -> None:
    client, seen = web
    now = int(time.time())
    made = {
        "expired": lambda: bearer(google_key, iat=now - 7200, exp=now - 3600),
        "wrong-audience": lambda: bearer(google_key, aud="someone-else.apps.googleusercontent.com"),
        "wrong-issuer": lambda: bearer(google_key, iss="https://evil.example"),
        "other-key": lambda: bearer(_make_key()),  # same kid as Google's cert, another key
    }
    headers = made[authorization]() if authorization in made else {"authorization": authorization}
    res = client.post("/tasks", json={"n": 1}, headers=headers)
    client.drain(timeout=10)  # type: ignore[attr-defined]
    assert (res.status_code, res.headers["www-authenticate"]) == (401, "Bearer")
    assert fragment in res.json()["error"]
    assert seen == []


@pytest.mark.parametrize(
    "claims",
    [
        {"hd": None, "email": "alice@shop.example"},  # a consumer account under the shop's address
        {"hd": "evil.example", "email": "mallory@evil.example"},
        {"hd": None, "email": "bot@evil-prod.iam.gserviceaccount.com"},
        {"hd": None, "email": ROBOT, "email_verified": False},
    ],
    ids=["no-hosted-domain", "other-domain", "other-project-robot", "unverified-robot"],
)
def test_a_domain_not_allowed_gets_403(
    shop_only: tuple[TestClient, list[JobMetadata]], google_key: Key, claims: dict[str, Any]
) -> None:
    client, seen = shop_only
    res = client.post("/tasks", json={"n": 1}, headers=bearer(google_key, **claims))
    assert res.status_code == 403, res.text
    assert "not allowed" in res.json()["error"]
    assert seen == []


def test_allowed_domains_admit_workspace_users_and_the_projects_robots(
    shop_only: tuple[TestClient, list[JobMetadata]], google_key: Key
) -> None:
    client, seen = shop_only
    user = client.post("/tasks", json={}, headers=bearer(google_key))
    robot = client.post("/tasks", json={}, headers=bearer(google_key, hd=None, email=ROBOT, sub="robot-1"))
    client.drain(timeout=10)  # type: ignore[attr-defined]
    assert (user.status_code, robot.status_code) == (202, 202)
    assert sorted(m.user or "" for m in seen) == sorted([ALICE["sub"], "robot-1"])


def test_allowed_emails_and_the_email_as_user_id(endpoint: FakeCertsEndpoint, google_key: Key) -> None:
    for client, seen in serve(request=endpoint, allowed_emails=["Alice@Shop.example"], user_claim="email"):
        ok = client.post("/tasks", json={}, headers=bearer(google_key))
        other = client.post("/tasks", json={}, headers=bearer(google_key, email="bob@shop.example"))
        client.drain(timeout=10)  # type: ignore[attr-defined]
        assert (ok.status_code, other.status_code) == (202, 403)
        assert [m.user for m in seen] == ["alice@shop.example"]


def test_email_as_user_id_needs_a_verified_email(endpoint: FakeCertsEndpoint, google_key: Key) -> None:
    hook = google_id_token(CLIENT_ID, user_claim="email", request=endpoint)
    with pytest.raises(AuthenticationError, match="no email claim") as missing:
        hook.verify(f"Bearer {token(google_key, email=None)}")
    with pytest.raises(AuthenticationError, match="not verified") as unverified:
        hook.verify(f"Bearer {token(google_key, email_verified=False)}")
    assert (missing.value.status, unverified.value.status) == (401, 403)


def test_certificates_are_fetched_once_and_shared(endpoint: FakeCertsEndpoint, google_key: Key) -> None:
    certs = GoogleCerts(endpoint)
    first = google_id_token(CLIENT_ID, certs=certs)
    second = google_id_token(["other-client", CLIENT_ID], certs=certs)
    for hook in (first, second, first):
        assert hook.verify(f"Bearer {token(google_key)}") == ALICE["sub"]
    assert len(endpoint.calls) == 1


def test_unreachable_certificates_answer_503_not_500(google_key: Key) -> None:
    down = FakeCertsEndpoint({}, status=-1)
    for client, seen in serve(request=down):
        res = client.post("/tasks", json={}, headers=bearer(google_key))
        assert res.status_code == 503, res.text
        assert "cannot verify ID tokens now" in res.json()["error"]
        assert seen == []


def test_verification_runs_off_the_event_loop(endpoint: FakeCertsEndpoint, google_key: Key) -> None:
    threads: list[str] = []

    def slow_fetch(url: str, method: str = "GET", *, timeout: float | None = None) -> Any:
        threads.append(threading.current_thread().name)
        time.sleep(0.2)
        return endpoint(url, method, timeout=timeout)

    hook = google_id_token(CLIENT_ID, request=slow_fetch)
    request = HttpRequest("POST", "/tasks", {"authorization": f"Bearer {token(google_key)}"})

    async def main() -> tuple[str | None, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        user = await hook(request)
        ticker.cancel()
        return user, ticks

    user, ticks = asyncio.run(main())
    assert user == ALICE["sub"]
    assert threads and threads[0] != "MainThread"
    assert ticks >= 5  # the loop kept running while the certificates were fetched


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        (("",), {}, "audience must be"),
        (([],), {}, "audience must be"),
        ((CLIENT_ID,), {"user_claim": "name"}, "user_claim must be"),
        ((CLIENT_ID,), {"allowed_domains": "shop.example"}, "not the string"),
        ((CLIENT_ID,), {"allowed_emails": [""]}, "non-empty strings"),
        ((CLIENT_ID,), {"certs": GoogleCerts(), "request": FakeCertsEndpoint({})}, "not both"),
    ],
)
def test_bad_options_are_configuration_errors(args: tuple[Any, ...], kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        google_id_token(*args, **kwargs)
