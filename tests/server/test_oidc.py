"""OIDC verification of Pub/Sub push requests, against tokens signed by a key made in the test."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from hypothesis import given, settings
from hypothesis import strategies as st

from queuerun.errors import ConfigurationError, PushAuthError, QueueRunError
from queuerun.server.oidc import GOOGLE_CERTS_URL, GoogleCerts, PushTokenVerifier

AUDIENCE = "https://shop-push.example"
PUSH_SA = "shop-push@test-project.iam.gserviceaccount.com"
KID = "kid-1"


@dataclass
class Key:
    private_pem: bytes
    cert_pem: str

    def sign(self, claims: Mapping[str, Any], kid: str = KID) -> str:
        signer = crypt.RSASigner.from_string(self.private_pem, key_id=kid)
        token: bytes = jwt.encode(signer, dict(claims))
        return token.decode()


def _make_key() -> Key:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-google-signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Key(private_pem, cert.public_bytes(serialization.Encoding.PEM).decode())


@pytest.fixture(scope="module")
def google_key() -> Key:
    return _make_key()


@pytest.fixture(scope="module")
def other_key() -> Key:
    return _make_key()


@dataclass
class FakeResponse:
    status: int
    headers: dict[str, str]
    data: bytes


@dataclass
class FakeCertsEndpoint:
    """Stands in for https://www.googleapis.com/oauth2/v1/certs and counts the calls."""

    certs: dict[str, str]
    cache_control: str = "public, max-age=21600, must-revalidate, no-transform"
    status: int = 200
    calls: list[str] = field(default_factory=list)

    def __call__(self, url: str, method: str = "GET", *, timeout: float | None = None) -> FakeResponse:
        self.calls.append(url)
        if self.status == -1:
            raise OSError("connection refused")
        return FakeResponse(self.status, {"Cache-Control": self.cache_control}, json.dumps(self.certs).encode())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def endpoint(google_key: Key) -> FakeCertsEndpoint:
    return FakeCertsEndpoint({KID: google_key.cert_pem})


@pytest.fixture
def verifier(endpoint: FakeCertsEndpoint) -> PushTokenVerifier:
    return PushTokenVerifier(audience=AUDIENCE, service_account_email=PUSH_SA, request=endpoint)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": PUSH_SA,
        "email_verified": True,
        "sub": "1234567890",
        "iat": now,
        "exp": now + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_a_valid_token_passes_and_returns_its_claims(verifier: PushTokenVerifier, google_key: Key) -> None:
    token = google_key.sign(claims())

    verified = verifier.verify(f"Bearer {token}")

    assert verified["email"] == PUSH_SA
    assert verified["aud"] == AUDIENCE


def test_the_issuer_without_scheme_is_accepted_too(verifier: PushTokenVerifier, google_key: Key) -> None:
    assert verifier.verify(f"Bearer {google_key.sign(claims(iss='accounts.google.com'))}")["iss"] == (
        "accounts.google.com"
    )


def test_the_bearer_scheme_is_case_insensitive(verifier: PushTokenVerifier, google_key: Key) -> None:
    assert verifier.verify(f"bearer {google_key.sign(claims())}")["email"] == PUSH_SA


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing Authorization"),
        ("", "missing Authorization"),
        ("Bearer", "malformed Authorization"),
        ("Bearer   ", "malformed Authorization"),
        ("Basic dXNlcjpwYXNz", "malformed Authorization"),
        ("Bearer not-a-jwt", "malformed push token"),
        ("Bearer a.b.c", "malformed push token"),
        ("Bearer " + "x" * 20000, "longer than"),
    ],
    ids=["missing", "empty", "no-token", "blank-token", "basic-auth", "garbage", "garbage-segments", "huge"],
)
def test_missing_or_malformed_credentials_get_401(
    verifier: PushTokenVerifier, authorization: str | None, reason: str
) -> None:
    with pytest.raises(PushAuthError, match=reason) as rejected:
        verifier.verify(authorization)

    assert rejected.value.status == 401


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 60, "iat": int(time.time()) - 3660}, "expired"),
        ({"aud": "https://evil.example"}, "wrong audience"),
        ({"aud": None}, "wrong audience"),
        ({"iss": "https://evil.example"}, "issuer 'https://evil.example'"),
        ({"iss": None}, "issuer None"),
        ({"exp": None}, "exp"),
    ],
    ids=["expired", "wrong-audience", "no-audience", "wrong-issuer", "no-issuer", "no-exp"],
)
def test_a_token_that_is_not_for_us_gets_401(
    verifier: PushTokenVerifier, google_key: Key, overrides: dict[str, Any], reason: str
) -> None:
    token = google_key.sign(claims(**overrides))

    with pytest.raises(PushAuthError, match=reason) as rejected:
        verifier.verify(f"Bearer {token}")

    assert rejected.value.status == 401


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"email": "attacker@evil.iam.gserviceaccount.com"}, "not the push service account"),
        ({"email": None}, "not the push service account"),
        ({"email_verified": False}, "not verified"),
        ({"email_verified": None}, "not verified"),
        ({"email_verified": "true"}, "not verified"),
    ],
    ids=["wrong-email", "no-email", "unverified", "no-email-verified", "email-verified-string"],
)
def test_a_token_from_another_caller_gets_403(
    verifier: PushTokenVerifier, google_key: Key, overrides: dict[str, Any], reason: str
) -> None:
    token = google_key.sign(claims(**overrides))

    with pytest.raises(PushAuthError, match=reason) as rejected:
        verifier.verify(f"Bearer {token}")

    assert rejected.value.status == 403


def test_a_token_signed_by_another_key_gets_401(
    verifier: PushTokenVerifier, other_key: Key, endpoint: FakeCertsEndpoint
) -> None:
    token = other_key.sign(claims())  # same kid as Google's cert, wrong key

    with pytest.raises(PushAuthError, match="signature") as rejected:
        verifier.verify(f"Bearer {token}")

    assert rejected.value.status == 401


def test_a_tampered_payload_gets_401(verifier: PushTokenVerifier, google_key: Key) -> None:
    header, _, signature = google_key.sign(claims(email="someone@else.example")).split(".")
    _, payload, _ = google_key.sign(claims()).split(".")

    with pytest.raises(PushAuthError, match="signature") as rejected:
        verifier.verify(f"Bearer {header}.{payload}.{signature}")

    assert rejected.value.status == 401


def test_an_unsigned_token_gets_401(verifier: PushTokenVerifier, google_key: Key) -> None:
    import base64

    def segment(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    token = f"{segment({'alg': 'none', 'kid': KID})}.{segment(claims())}."

    with pytest.raises(PushAuthError, match="algorithm") as rejected:
        verifier.verify(f"Bearer {token}")

    assert rejected.value.status == 401


def test_a_token_naming_an_unknown_key_gets_401(verifier: PushTokenVerifier, google_key: Key) -> None:
    with pytest.raises(PushAuthError, match="kid-unknown") as rejected:
        verifier.verify(f"Bearer {google_key.sign(claims(), kid='kid-unknown')}")

    assert rejected.value.status == 401


def test_push_auth_error_belongs_to_the_error_tree() -> None:
    assert issubclass(PushAuthError, QueueRunError)


def test_audience_and_service_account_are_required() -> None:
    with pytest.raises(ConfigurationError, match="audience") as failure:
        PushTokenVerifier(audience="", service_account_email=" ")

    assert len(failure.value.problems) == 2


# --- the certificate cache ---


def test_certs_are_fetched_once_across_many_verifications(
    verifier: PushTokenVerifier, google_key: Key, endpoint: FakeCertsEndpoint
) -> None:
    token = google_key.sign(claims())

    for _ in range(50):
        verifier.verify(f"Bearer {token}")

    assert endpoint.calls == [GOOGLE_CERTS_URL]


def test_certs_are_fetched_once_by_many_threads_at_once(
    verifier: PushTokenVerifier, google_key: Key, endpoint: FakeCertsEndpoint
) -> None:
    token = google_key.sign(claims())
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        try:
            for _ in range(10):
                verifier.verify(f"Bearer {token}")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert len(endpoint.calls) == 1


def test_certs_are_refetched_after_max_age(endpoint: FakeCertsEndpoint) -> None:
    endpoint.cache_control = "public, max-age=600"
    clock = Clock()
    certs = GoogleCerts(endpoint, clock=clock)

    certs.get()
    clock.now += 599
    certs.get()
    assert len(endpoint.calls) == 1

    clock.now += 2
    certs.get()
    assert len(endpoint.calls) == 2


def test_no_store_means_no_caching(endpoint: FakeCertsEndpoint) -> None:
    endpoint.cache_control = "no-store"
    certs = GoogleCerts(endpoint, clock=Clock())

    certs.get()
    certs.get()

    assert len(endpoint.calls) == 2


def test_an_unknown_key_id_refreshes_the_certs_at_most_once_a_minute(
    endpoint: FakeCertsEndpoint, google_key: Key, other_key: Key
) -> None:
    clock = Clock()
    verifier = PushTokenVerifier(
        audience=AUDIENCE, service_account_email=PUSH_SA, certs=GoogleCerts(endpoint, clock=clock)
    )
    verifier.verify(f"Bearer {google_key.sign(claims())}")

    # Google rotates its keys: the new one appears at the endpoint
    endpoint.certs = {KID: google_key.cert_pem, "kid-2": other_key.cert_pem}
    rotated = f"Bearer {other_key.sign(claims(), kid='kid-2')}"
    with pytest.raises(PushAuthError):  # still within a minute of the first fetch
        verifier.verify(rotated)
    assert len(endpoint.calls) == 1

    clock.now += 61
    assert verifier.verify(rotated)["email"] == PUSH_SA
    assert len(endpoint.calls) == 2
    with pytest.raises(PushAuthError):
        verifier.verify(f"Bearer {other_key.sign(claims(), kid='kid-3')}")
    assert len(endpoint.calls) == 2


def test_unreachable_certs_give_503_and_are_not_retried_on_every_request(endpoint: FakeCertsEndpoint) -> None:
    endpoint.status = -1
    certs = GoogleCerts(endpoint, clock=Clock())

    for _ in range(3):
        with pytest.raises(PushAuthError, match=r"connection refused|unavailable") as failure:
            certs.get()
        assert failure.value.status == 503

    assert len(endpoint.calls) == 1


def test_stale_certs_keep_serving_while_google_is_unreachable(endpoint: FakeCertsEndpoint, google_key: Key) -> None:
    endpoint.cache_control = "max-age=60"
    clock = Clock()
    certs = GoogleCerts(endpoint, clock=clock)
    assert certs.get() == {KID: google_key.cert_pem}

    endpoint.status = 500
    clock.now += 120

    assert certs.get() == {KID: google_key.cert_pem}
    assert len(endpoint.calls) == 2


@pytest.mark.parametrize(
    "body",
    [b"<html>", b"[]", b"{}", b'{"kid": 3}'],
    ids=["not-json", "list", "empty", "not-pem-strings"],
)
def test_a_broken_certs_answer_gives_503(body: bytes) -> None:
    def request(url: str, method: str = "GET", *, timeout: float | None = None) -> FakeResponse:
        return FakeResponse(200, {}, body)

    with pytest.raises(PushAuthError) as failure:
        GoogleCerts(request).get()

    assert failure.value.status == 503


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.text(), st.text().map(lambda t: "Bearer " + t)))
def test_any_authorization_header_is_accepted_or_rejected_cleanly(authorization: str | None) -> None:
    verifier = PushTokenVerifier(
        audience=AUDIENCE, service_account_email=PUSH_SA, request=FakeCertsEndpoint({KID: _CERT_FOR_FUZZ})
    )

    with pytest.raises(PushAuthError) as rejected:
        verifier.verify(authorization)

    assert rejected.value.status == 401


_CERT_FOR_FUZZ = _make_key().cert_pem


# --- tokens whose signature Cloud Run verified and removed (an IAM-protected service) ---

STRIPPED = "SIGNATURE_REMOVED_BY_GOOGLE"


def _segment(obj: Any) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def stripped(token: str) -> str:
    """The token as an IAM-protected Cloud Run service receives it."""
    header, payload, _ = token.split(".")
    return f"{header}.{payload}.{STRIPPED}"


@pytest.fixture
def iam_verifier(endpoint: FakeCertsEndpoint) -> PushTokenVerifier:
    return PushTokenVerifier(audience=AUDIENCE, service_account_email=PUSH_SA, request=endpoint, mode="cloud-run-iam")


def test_behind_cloud_run_iam_a_stripped_token_is_accepted_on_its_claims(
    iam_verifier: PushTokenVerifier, google_key: Key, endpoint: FakeCertsEndpoint
) -> None:
    token = stripped(google_key.sign(claims()))

    verified = iam_verifier.verify(f"Bearer {token}")

    assert (verified["email"], verified["aud"]) == (PUSH_SA, AUDIENCE)
    assert endpoint.calls == []  # no signature to check, so no certificates fetched


def test_in_verify_mode_a_stripped_token_gets_401_naming_the_setting(
    verifier: PushTokenVerifier, google_key: Key
) -> None:
    with pytest.raises(PushAuthError, match=r"removed by Cloud Run.*QUEUERUN_PUSH_AUTH=cloud-run-iam") as rejected:
        verifier.verify(f"Bearer {stripped(google_key.sign(claims()))}")

    assert rejected.value.status == 401


@pytest.mark.parametrize(
    ("overrides", "reason", "status"),
    [
        ({"aud": "https://evil.example"}, "wrong audience", 401),
        ({"aud": None}, "wrong audience", 401),
        ({"aud": [AUDIENCE]}, "wrong audience", 401),
        ({"iss": "https://evil.example"}, "issuer 'https://evil.example'", 401),
        ({"exp": int(time.time()) - 60, "iat": int(time.time()) - 3660}, "expired", 401),
        ({"exp": None}, "exp", 401),
        ({"exp": True}, "exp", 401),
        ({"iat": int(time.time()) + 600}, "future", 401),
        ({"iat": None}, "iat", 401),
        ({"email": "attacker@evil.iam.gserviceaccount.com"}, "not the push service account", 403),
        ({"email_verified": False}, "not verified", 403),
        ({"email_verified": "true"}, "not verified", 403),
    ],
    ids=[
        "wrong-audience",
        "no-audience",
        "audience-list",
        "wrong-issuer",
        "expired",
        "no-exp",
        "exp-bool",
        "issued-in-future",
        "no-iat",
        "wrong-email",
        "unverified",
        "email-verified-string",
    ],
)
def test_behind_cloud_run_iam_a_stripped_token_is_still_checked_claim_by_claim(
    iam_verifier: PushTokenVerifier, google_key: Key, overrides: dict[str, Any], reason: str, status: int
) -> None:
    token = stripped(google_key.sign(claims(**overrides)))

    with pytest.raises(PushAuthError, match=reason) as rejected:
        iam_verifier.verify(f"Bearer {token}")

    assert rejected.value.status == status


@pytest.mark.parametrize(
    "token",
    [
        f"{_segment({'alg': 'none', 'kid': KID})}.{_segment(claims())}.{STRIPPED}",
        f"{_segment({'alg': 'HS256', 'kid': KID})}.{_segment(claims())}.{STRIPPED}",
        f"{_segment({'kid': KID})}.{_segment(claims())}.{STRIPPED}",
        f"{_segment({'alg': 'none', 'kid': KID})}.{_segment(claims())}.",
        f"{_segment({'alg': 'RS256', 'kid': KID})}.{_segment(claims())}.",
        f"{_segment({'alg': 'RS256', 'kid': KID})}.{_segment(claims())}.SIGNATURE_REMOVED",
        f"{_segment({'alg': 'RS256', 'kid': KID})}.{_segment(claims())}.signature_removed_by_google",
        f"{_segment({'alg': 'RS256', 'kid': KID})}.{_segment(claims())}",
        f"{_segment({'alg': 'RS256', 'kid': KID})}.{_segment(claims())}.x.{STRIPPED}",
        f"{_segment({'alg': 'RS256', 'kid': KID})}.not*base64.{STRIPPED}",
        f"{_segment({'alg': 'RS256', 'kid': KID})}.{_segment(['a', 'list'])}.{STRIPPED}",
        f"{_segment({'alg': 'RS256', 'kid': KID})}..{STRIPPED}",
        f"bm90IGpzb24.{_segment(claims())}.{STRIPPED}",
    ],
    ids=[
        "alg-none",
        "alg-hs256",
        "no-alg",
        "alg-none-empty-signature",
        "empty-signature",
        "other-placeholder",
        "placeholder-lowercase",
        "two-segments",
        "four-segments",
        "payload-not-base64url",
        "payload-not-object",
        "empty-payload",
        "header-not-json",
    ],
)
@pytest.mark.parametrize("mode", ["verify", "cloud-run-iam"])
def test_no_other_unsigned_or_malformed_token_is_ever_accepted(
    endpoint: FakeCertsEndpoint, token: str, mode: Any
) -> None:
    verifier = PushTokenVerifier(audience=AUDIENCE, service_account_email=PUSH_SA, request=endpoint, mode=mode)

    with pytest.raises(PushAuthError) as rejected:
        verifier.verify(f"Bearer {token}")

    assert rejected.value.status == 401


@pytest.mark.parametrize("mode", ["verify", "cloud-run-iam"])
def test_a_forged_signature_is_refused_in_both_modes(
    endpoint: FakeCertsEndpoint, other_key: Key, google_key: Key, mode: Any
) -> None:
    verifier = PushTokenVerifier(audience=AUDIENCE, service_account_email=PUSH_SA, request=endpoint, mode=mode)
    header, payload, _ = google_key.sign(claims()).split(".")
    forged_signature = other_key.sign(claims()).split(".")[2]

    for token in (other_key.sign(claims()), f"{header}.{payload}.{forged_signature}"):
        with pytest.raises(PushAuthError, match="signature") as rejected:
            verifier.verify(f"Bearer {token}")
        assert rejected.value.status == 401


def test_behind_cloud_run_iam_a_token_with_its_signature_is_verified_in_full(
    iam_verifier: PushTokenVerifier, google_key: Key, endpoint: FakeCertsEndpoint
) -> None:
    assert iam_verifier.verify(f"Bearer {google_key.sign(claims())}")["email"] == PUSH_SA
    assert endpoint.calls == [GOOGLE_CERTS_URL]


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="mode"):
        PushTokenVerifier(audience=AUDIENCE, service_account_email=PUSH_SA, mode="trust-me")  # type: ignore[arg-type]


# --- the QUEUERUN_PUSH_AUTH setting ---

_ON_CLOUD_RUN = {"K_SERVICE": "shop", "QUEUERUN_BACKEND": "gcp", "GOOGLE_CLOUD_PROJECT": "p"}


def test_push_auth_defaults_to_verify() -> None:
    from queuerun.settings import Settings

    assert Settings.from_environ({}).push_auth == "verify"
    assert Settings.from_environ(_ON_CLOUD_RUN).push_auth == "verify"


def test_push_auth_cloud_run_iam_is_accepted_on_cloud_run() -> None:
    from queuerun.settings import Settings

    assert Settings.from_environ({**_ON_CLOUD_RUN, "QUEUERUN_PUSH_AUTH": "cloud-run-iam"}).push_auth == "cloud-run-iam"


def test_push_auth_cloud_run_iam_is_refused_off_cloud_run() -> None:
    from queuerun.settings import Settings

    with pytest.raises(ConfigurationError, match=r"QUEUERUN_PUSH_AUTH='cloud-run-iam'.*K_SERVICE"):
        Settings.from_environ({"QUEUERUN_PUSH_AUTH": "cloud-run-iam"})


@pytest.mark.parametrize("value", ["iam", "none", "off", "cloud_run_iam"])
def test_an_invalid_push_auth_value_is_refused_with_setting_and_value(value: str) -> None:
    from queuerun.settings import Settings

    with pytest.raises(ConfigurationError, match=f"QUEUERUN_PUSH_AUTH.*{value!r}"):
        Settings.from_environ({**_ON_CLOUD_RUN, "QUEUERUN_PUSH_AUTH": value})
