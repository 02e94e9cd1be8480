"""A push token verified in full is accepted again without a signature check, until it expires."""

from __future__ import annotations

import time

import pytest
from server.test_oidc import AUDIENCE, KID, PUSH_SA, FakeCertsEndpoint, Key, _make_key, claims

from queuerun.errors import PushAuthError
from queuerun.server.oidc import PushTokenVerifier


@pytest.fixture(scope="module")
def key() -> Key:
    return _make_key()


def make_verifier(key: Key) -> PushTokenVerifier:
    return PushTokenVerifier(
        audience=AUDIENCE, service_account_email=PUSH_SA, request=FakeCertsEndpoint({KID: key.cert_pem})
    )


def test_a_verified_token_is_remembered_until_its_expiry(key: Key) -> None:
    verifier = make_verifier(key)
    header = f"Bearer {key.sign(claims())}"
    assert verifier.cached(header) is None  # never seen: verify in full first
    assert verifier.verify(header)["email"] == PUSH_SA
    assert verifier.cached(header) == verifier.verify(header)
    assert verifier.cached(header + "x") is None  # not the same token to the byte
    assert verifier.cached(None) is None


def test_an_expired_token_is_not_served_from_the_cache(key: Key) -> None:
    verifier = make_verifier(key)
    now = int(time.time())
    # Accepted within the clock skew, but already past its expiry: the cache must not extend it.
    header = f"Bearer {key.sign(claims(iat=now - 3600, exp=now - 5))}"
    verifier.verify(header)
    assert verifier.cached(header) is None


def test_a_rejected_token_is_never_cached(key: Key) -> None:
    verifier = make_verifier(key)
    header = f"Bearer {key.sign(claims(email='someone@else.example'))}"
    with pytest.raises(PushAuthError):
        verifier.verify(header)
    assert verifier.cached(header) is None
