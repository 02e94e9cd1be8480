"""Push tokens: time claims, lifetime, one token per request, and what a refusal tells the caller.

Scripted attacks against the real push server on a loopback port, with tokens signed by a key the test
makes and serves as Google's certificates.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from raw_http import raw_post
from server.test_oidc import AUDIENCE, KID, PUSH_SA, FakeCertsEndpoint, Key, _make_key, claims
from starlette.datastructures import Headers

from queuerun import App, JobMetadata
from queuerun.errors import PushAuthError
from queuerun.server.oidc import (
    MAX_TOKEN_LIFETIME,
    SIGNATURE_REMOVED,
    PushTokenVerifier,
    decode_stripped_token,
    push_authorization,
)
from queuerun.server.serve import BackgroundServer

NOW = int(time.time())


@pytest.fixture(scope="module")
def google_key() -> Key:
    return _make_key()


@pytest.fixture
def verifier(google_key: Key) -> PushTokenVerifier:
    return PushTokenVerifier(
        audience=AUDIENCE, service_account_email=PUSH_SA, request=FakeCertsEndpoint({KID: google_key.cert_pem})
    )


def _stripped(token: str) -> str:
    return token.rpartition(".")[0] + "." + SIGNATURE_REMOVED


# -- time claims, on signed tokens and on tokens Cloud Run checked --------------------------------


TIME_ATTACKS = {
    "lives a day": ({"iat": NOW - 60, "exp": NOW + 86_400}, "lifetime"),
    "one second over an hour": ({"iat": NOW - 60, "exp": NOW - 60 + MAX_TOKEN_LIFETIME + 1}, "lifetime"),
    "not valid yet": ({"nbf": NOW + 600}, "not valid yet"),
    "nbf not a time": ({"nbf": "soon"}, "claim nbf"),
    "iat missing": ({"iat": None}, "claim iat"),
    "issued in the future": ({"iat": NOW + 600, "exp": NOW + 1200}, "issued in the future|used too early"),
}


@pytest.mark.parametrize("attack", list(TIME_ATTACKS), ids=list(TIME_ATTACKS))
def test_a_signed_push_token_with_bad_times_is_refused(
    verifier: PushTokenVerifier, google_key: Key, attack: str
) -> None:
    overrides, reason = TIME_ATTACKS[attack]
    token = google_key.sign({k: v for k, v in claims(**overrides).items() if v is not None})
    with pytest.raises(PushAuthError, match=reason) as caught:
        verifier.verify(f"Bearer {token}")
    assert caught.value.status == 401


@pytest.mark.parametrize("attack", list(TIME_ATTACKS), ids=list(TIME_ATTACKS))
def test_a_token_checked_by_cloud_run_with_bad_times_is_refused(google_key: Key, attack: str) -> None:
    overrides, reason = TIME_ATTACKS[attack]
    token = _stripped(google_key.sign({k: v for k, v in claims(**overrides).items() if v is not None}))
    with pytest.raises(PushAuthError, match=reason):
        decode_stripped_token(token, AUDIENCE, clock_skew_in_seconds=10, label="push token")


def test_an_hour_long_token_is_google_s_own_and_accepted(verifier: PushTokenVerifier, google_key: Key) -> None:
    token = google_key.sign(claims(iat=NOW - 5, exp=NOW - 5 + MAX_TOKEN_LIFETIME, nbf=NOW - 5))
    assert verifier.verify(f"Bearer {token}")["email"] == PUSH_SA


# -- one token per request --------------------------------------------------------------------------


def test_two_authorization_headers_are_refused_not_picked_from() -> None:
    headers = Headers(raw=[(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")])  # as the server sees it
    with pytest.raises(PushAuthError, match="2 Authorization headers"):
        push_authorization(headers)


def test_a_push_request_with_x_serverless_authorization_is_refused() -> None:
    """Cloud Run may check that header and forward ``Authorization`` unchecked: Pub/Sub never sends it."""
    with pytest.raises(PushAuthError, match="X-Serverless-Authorization"):
        push_authorization({"authorization": "Bearer a", "X-Serverless-Authorization": "Bearer b"})


# -- the live server: refusals name no audience, no account ----------------------------------------


@pytest.fixture
def push_server(google_key: Key) -> Iterator[tuple[str, list[JobMetadata]]]:
    app = App("tokens", settings={"GOOGLE_CLOUD_PROJECT": "secret-project-123"})
    seen: list[JobMetadata] = []

    @app.queue("emails")
    def emails(payload: Any, meta: JobMetadata) -> None:
        seen.append(meta)

    verifier = PushTokenVerifier(
        audience=AUDIENCE, service_account_email=PUSH_SA, request=FakeCertsEndpoint({KID: google_key.cert_pem})
    )
    with BackgroundServer(app, push_options={"verifier": verifier}) as server:
        yield server.url, seen


def _post(url: str, token: str) -> httpx.Response:
    with httpx.Client(trust_env=False) as client:  # loopback only: no proxy from the environment
        return client.post(f"{url}/_pubsub/emails", content=_envelope(), headers={"authorization": f"Bearer {token}"})


def _envelope() -> bytes:
    data = base64.b64encode(json.dumps({"to": "x"}).encode()).decode()
    message = {"data": data, "attributes": {}, "messageId": "m1", "publishTime": "2026-01-01T00:00:00Z"}
    return json.dumps({"message": message, "subscription": "projects/p/subscriptions/s"}).encode()


ATTACKS = {
    "wrong audience": lambda key: key.sign(claims(aud="https://attacker.example")),
    "another account": lambda key: key.sign(claims(email="attacker@evil.iam.gserviceaccount.com")),
    "a year long": lambda key: key.sign(claims(iat=NOW - 10, exp=NOW + 365 * 86_400)),
    "forged as checked by Cloud Run": lambda key: _stripped(key.sign(claims())),
    "self-signed": lambda key: _make_key().sign(claims()),
}


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_every_forged_push_is_refused_and_the_answer_names_nothing_secret(
    push_server: tuple[str, list[JobMetadata]], google_key: Key, attack: str
) -> None:
    url, seen = push_server
    token = ATTACKS[attack](google_key)
    response = _post(url, token)
    assert response.status_code in (401, 403)
    text = response.text
    for secret in (AUDIENCE, PUSH_SA, "secret-project-123"):
        assert secret not in text
    assert seen == []


def test_a_genuine_push_still_runs(push_server: tuple[str, list[JobMetadata]], google_key: Key) -> None:
    url, seen = push_server
    token = google_key.sign(claims())
    response = _post(url, token)
    assert response.status_code == 204, response.text
    assert [m.job_id for m in seen] == ["m1"]


def test_a_genuine_token_with_a_second_authorization_header_is_refused(
    push_server: tuple[str, list[JobMetadata]], google_key: Key
) -> None:
    """Starlette reads the first copy, a proxy may read the last: a push with two is refused outright."""
    url, seen = push_server
    good, bad = google_key.sign(claims()), _make_key().sign(claims())
    for pair in ((good, bad), (bad, good)):
        answer = raw_post(url, "/_pubsub/emails", [("Authorization", f"Bearer {t}") for t in pair], _envelope())
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert seen == []
