"""Verification of the OIDC token Pub/Sub attaches to push requests (``Authorization: Bearer ...``).

A push subscription configured with ``oidc_token`` signs each request as its push service account.
We accept a request only if the token is signed by Google (certificates from ``GOOGLE_CERTS_URL``,
kept in memory as long as their Cache-Control allows), is unexpired, names our audience, was issued
by Google, and carries ``email`` equal to the push service account with ``email_verified`` true.

On an IAM-protected Cloud Run service, Cloud Run checks the token (signature, audience, invoker
role) and forwards it with its signature replaced by ``SIGNATURE_REMOVED_BY_GOOGLE``. With
``mode="cloud-run-iam"`` such a token is accepted on its claims alone (every check above but the
signature); a token that still has a signature is verified in full in either mode, and nothing
else unsigned is ever accepted.

Every token must also have ``iat`` and ``exp``, not be used before ``nbf``, and live at most
:data:`MAX_TOKEN_LIFETIME` (an hour, a Google ID token's lifetime). A push request carries exactly one
``Authorization`` header and no ``X-Serverless-Authorization`` (:func:`push_authorization`).

What a push token is bound to: the audience of the app's push subscriptions and the app's push
service account, for at most an hour. It is not bound to a message, a queue or a request (Pub/Sub
may reuse one token for many pushes), so a captured token can replay pushes to this app until it
expires: tokens travel over HTTPS only and are never logged (reasons are cut to 200 characters
because some libraries quote the token).

Verification may fetch certificates over the network: call it from a worker thread in async code.
The Pub/Sub emulator sends no token at all; turning verification off is the server's setting.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from queuerun.errors import ConfigurationError, PushAuthError
from queuerun.settings import ENV, PUSH_AUTH_MODES, PushAuth

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
VERIFIED_CACHE_SIZE: Final = 256  # verified push tokens remembered until their expiry
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")

# What Cloud Run puts in place of the signature once its IAM layer has verified the token.
SIGNATURE_REMOVED: Final = "SIGNATURE_REMOVED_BY_GOOGLE"
GOOGLE_TOKEN_ALGORITHM: Final = "RS256"
# The header Cloud Run's IAM check reads instead of ``Authorization`` when both are sent (stated in
# GoogleCloudPlatform/cloud-run-proxy PR #25; Google's own text was not retrieved: docs/platform-facts.md fact 1).
SERVERLESS_AUTHORIZATION: Final = "x-serverless-authorization"

# Google-signed ID tokens live one hour: https://cloud.google.com/docs/authentication/token-types (ID
# tokens; the English sentence was not retrieved, see docs/platform-facts.md fact 6) and the decoded push
# token on https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions (exp - iat = 3600).
MAX_TOKEN_LIFETIME: Final = 3600

# Google's tokens are about 1 KB; refuse to parse anything absurdly larger.
MAX_TOKEN_CHARS = 16 * 1024

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)


class HttpResponse(Protocol):
    """What ``google.auth.transport.Response`` offers, and all we read of it."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def data(self) -> bytes: ...


class HttpRequest(Protocol):
    """A ``google.auth.transport.Request``-like callable, e.g. ``google.auth.transport.requests.Request()``."""

    def __call__(self, url: str, method: str = "GET", *, timeout: float | None = None) -> HttpResponse: ...


def _default_request() -> HttpRequest:
    import google.auth.transport.requests  # heavy: imported only when certificates are first needed

    request: HttpRequest = google.auth.transport.requests.Request()
    return request


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _lifetime(headers: Mapping[str, str], default: float) -> float:
    """Seconds the response may be cached: Cache-Control max-age less Age, 0 for no-cache/no-store."""
    cache_control = _header(headers, "cache-control") or ""
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return default
    age = _header(headers, "age") or "0"
    return max(0.0, float(match.group(1)) - (float(age) if age.strip().isdigit() else 0.0))


class GoogleCerts:
    """Google's OIDC signing certificates (``{key id: PEM}``), cached in memory; safe to share between threads.

    A fetch happens when the cache has expired, or when a token names a key id we do not hold (Google
    rotated its keys), at most once per ``kid_refresh_interval`` for the latter. If a refresh fails
    while certificates are held, the stale ones keep serving and the fetch is retried after
    ``retry_interval``; with none held, verification fails with status 503.
    """

    def __init__(
        self,
        request: HttpRequest | None = None,
        *,
        url: str = GOOGLE_CERTS_URL,
        timeout: float = 10.0,
        default_max_age: float = 300.0,
        kid_refresh_interval: float = 60.0,
        retry_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._request = request
        self._url = url
        self._timeout = timeout
        self._default_max_age = default_max_age
        self._kid_refresh_interval = kid_refresh_interval
        self._retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._certs: dict[str, str] | None = None
        self._expires_at = 0.0
        self._kid_refresh_at = 0.0  # earliest time a missing key id may force a fetch
        self._retry_at = 0.0  # earliest time to fetch again after a failed fetch

    def get(self, key_id: str | None = None) -> Mapping[str, str]:
        """The current certificates; ``key_id`` is the token's ``kid``, to refresh when it is unknown."""
        with self._lock:
            now = self._clock()
            certs = self._certs
            if certs is not None:
                fresh = now < self._expires_at
                unknown_kid = key_id is not None and key_id not in certs
                if (fresh and not (unknown_kid and now >= self._kid_refresh_at)) or now < self._retry_at:
                    return certs
            elif now < self._retry_at:
                raise PushAuthError(503, f"Google's certificates are unavailable (fetching {self._url} failed)")
            try:
                fetched, lifetime = self._fetch()
            except PushAuthError:
                self._retry_at = now + self._retry_interval
                if certs is not None:
                    return certs  # stale, but Google's keys outlive their cache lifetime by days
                raise
            self._certs = fetched
            self._expires_at = now + lifetime
            self._kid_refresh_at = now + self._kid_refresh_interval
            self._retry_at = 0.0
            return fetched

    def _fetch(self) -> tuple[dict[str, str], float]:
        if self._request is None:
            self._request = _default_request()
        try:
            response = self._request(self._url, method="GET", timeout=self._timeout)
            status, headers, data = response.status, response.headers, response.data
        except Exception as exc:  # any transport failure is the same outage to us
            raise PushAuthError(503, f"could not fetch Google's certificates from {self._url}: {exc}") from exc
        if status != 200:
            raise PushAuthError(503, f"could not fetch Google's certificates from {self._url}: HTTP {status}")
        try:
            certs = json.loads(data)
        except (ValueError, TypeError) as exc:
            raise PushAuthError(503, f"Google's certificates from {self._url} are not JSON: {exc}") from exc
        if not (
            isinstance(certs, dict)
            and certs
            and all(isinstance(k, str) and isinstance(v, str) for k, v in certs.items())
        ):
            raise PushAuthError(503, f"Google's certificates from {self._url} are not a {{key id: PEM}} object")
        return certs, _lifetime(headers, self._default_max_age)


class PushTokenVerifier:
    """Checks the ``Authorization`` header of a Pub/Sub push request; see the module docstring.

    ``audience`` is the one configured on the push subscription's OIDC token and
    ``service_account_email`` its service account. ``mode`` is ``QUEUERUN_PUSH_AUTH``: ``"verify"``
    or ``"cloud-run-iam"`` (accept tokens whose signature Cloud Run verified and removed). ``request``
    (or a shared ``certs``) lets tests and callers supply the HTTP transport for Google's certificates.
    """

    def __init__(
        self,
        *,
        audience: str,
        service_account_email: str,
        certs: GoogleCerts | None = None,
        request: HttpRequest | None = None,
        clock_skew_in_seconds: int = 10,
        mode: PushAuth = "verify",
    ) -> None:
        problems = [
            f"{field} must be a non-empty string (got {value!r})"
            for field, value in (("audience", audience), ("service_account_email", service_account_email))
            if not isinstance(value, str) or not value.strip()
        ]
        if mode not in PUSH_AUTH_MODES:
            problems.append(f"mode must be one of {list(PUSH_AUTH_MODES)} (got {mode!r})")
        if problems:
            raise ConfigurationError([f"push authentication: {problem}" for problem in problems])
        if certs is not None and request is not None:
            raise ConfigurationError("push authentication: pass certs or request, not both")
        self.audience = audience
        self.service_account_email = service_account_email
        self.certs = certs if certs is not None else GoogleCerts(request)
        self.clock_skew_in_seconds = clock_skew_in_seconds
        self.mode = mode
        # Pub/Sub sends one token with many pushes until it nears expiry: a token verified in full is
        # accepted again, unchanged to the byte, until its "exp" (no signature check, no thread hop).
        self._verified: dict[str, tuple[dict[str, Any], float]] = {}
        self._verified_lock = threading.Lock()

    def cached(self, authorization: str | None) -> dict[str, Any] | None:
        """The claims of this exact header's token if :meth:`verify` accepted it and it has not expired."""
        if not authorization:
            return None
        with self._verified_lock:
            hit = self._verified.get(authorization)
        if hit is None or hit[1] <= time.time():
            return None
        return dict(hit[0])

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """Return the token's claims, or raise PushAuthError (401 bad token, 403 wrong caller, 503 no certs)."""
        claims = self._verify(authorization)
        expires = claims.get("exp")
        if authorization and isinstance(expires, (int, float)) and not isinstance(expires, bool):
            with self._verified_lock:
                if len(self._verified) >= VERIFIED_CACHE_SIZE:
                    self._verified.clear()  # a handful of live tokens at a time: start over rather than track age
                self._verified[authorization] = (dict(claims), float(expires))
        return claims

    def _verify(self, authorization: str | None) -> dict[str, Any]:
        token = _bearer_token(authorization)
        if token.rpartition(".")[2] == SIGNATURE_REMOVED:
            if self.mode != "cloud-run-iam":
                raise PushAuthError(
                    401,
                    f"push token's signature was removed by Cloud Run ({SIGNATURE_REMOVED}): the service is "
                    f"IAM-protected and Cloud Run has checked the token; set {ENV.PUSH_AUTH}=cloud-run-iam",
                )
            claims = decode_stripped_token(
                token, self.audience, clock_skew_in_seconds=self.clock_skew_in_seconds, label="push token"
            )
        else:
            claims = decode_google_token(
                token, self.certs, self.audience, clock_skew_in_seconds=self.clock_skew_in_seconds, label="push token"
            )
        email = claims.get("email")
        if not isinstance(email, str) or email.casefold() != self.service_account_email.casefold():
            raise PushAuthError(
                403,
                f"push token is for {email!r}, not the push service account {self.service_account_email!r}",
                public=f"push token is for {email!r}, not the push subscription's service account",
            )
        if claims.get("email_verified") is not True:
            raise PushAuthError(403, f"push token's email {email!r} is not verified (email_verified is not true)")
        return dict(claims)


def decode_google_token(
    token: str, certs: GoogleCerts, audience: str | list[str], *, clock_skew_in_seconds: int, label: str
) -> dict[str, Any]:
    """The claims of a Google-signed token: signature, expiry, audience and issuer checked.

    Raises PushAuthError: 401 for a bad token, 503 when Google's certificates cannot be had.
    """
    from google.auth import exceptions, jwt  # heavy: imported only where used

    try:
        key_id = jwt.decode_header(token).get("kid")  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, exceptions.GoogleAuthError) as exc:
        raise PushAuthError(401, f"malformed {label}: {_brief(exc)}") from None
    pem = certs.get(key_id if isinstance(key_id, str) else None)
    try:
        claims = jwt.decode(  # type: ignore[no-untyped-call]
            token, certs=pem, audience=audience, clock_skew_in_seconds=clock_skew_in_seconds
        )
    except (ValueError, TypeError, exceptions.GoogleAuthError) as exc:
        raise PushAuthError(401, f"{label} rejected: {_brief(exc)}") from None
    if not isinstance(claims, Mapping):
        raise PushAuthError(401, f"{label} rejected: its payload is not a JSON object")
    issuer = claims.get("iss")
    if issuer not in GOOGLE_ISSUERS:
        raise PushAuthError(401, f"{label} rejected: issuer {issuer!r} is not one of {list(GOOGLE_ISSUERS)}")
    check_times(claims, clock_skew_in_seconds=clock_skew_in_seconds, label=label)
    return dict(claims)


def decode_stripped_token(
    token: str, audience: str | None, *, clock_skew_in_seconds: int, label: str, now: float | None = None
) -> dict[str, Any]:
    """The claims of a token whose signature Cloud Run verified and replaced by ``SIGNATURE_REMOVED``.

    Checks everything :func:`decode_google_token` does except the signature: the caller must know
    that Cloud Run's IAM layer stands in front (``QUEUERUN_PUSH_AUTH=cloud-run-iam``). ``audience``
    None skips the audience check (Cloud Run checked it against the run.app URL or a custom
    audience, which the container may not know). Raises PushAuthError 401.
    """
    segments = token.split(".")
    if len(segments) != 3 or segments[2] != SIGNATURE_REMOVED:
        raise PushAuthError(401, f"malformed {label}: expected header.payload.{SIGNATURE_REMOVED}")
    header = _json_segment(segments[0], f"{label} header")
    claims = _json_segment(segments[1], f"{label} payload")
    if header.get("alg") != GOOGLE_TOKEN_ALGORITHM:
        raise PushAuthError(
            401, f"{label} rejected: algorithm {header.get('alg')!r} is not Google's {GOOGLE_TOKEN_ALGORITHM!r}"
        )
    if audience is not None and claims.get("aud") != audience:
        raise PushAuthError(401, f"{label} rejected: wrong audience {claims.get('aud')!r}, expected {audience!r}")
    issuer = claims.get("iss")
    if issuer not in GOOGLE_ISSUERS:
        raise PushAuthError(401, f"{label} rejected: issuer {issuer!r} is not one of {list(GOOGLE_ISSUERS)}")
    check_times(claims, clock_skew_in_seconds=clock_skew_in_seconds, label=label, now=now)
    return claims


def check_times(
    claims: Mapping[str, Any], *, clock_skew_in_seconds: int, label: str, now: float | None = None
) -> None:
    """The token's time claims: ``iat`` and ``exp`` present, not issued in the future, unexpired, not
    used before ``nbf`` (when present), and a lifetime (``exp - iat``) of at most
    :data:`MAX_TOKEN_LIFETIME`. Raises PushAuthError 401.

    google-auth checks ``iat`` and ``exp`` but neither ``nbf`` nor the lifetime: a token minted to last
    a year is no Google ID token, whoever signed it.
    """
    current = time.time() if now is None else now
    times: dict[str, float] = {}
    for name in ("iat", "exp", "nbf"):
        value = claims.get(name)
        if value is None and name == "nbf":
            continue
        # bool is an int to Python, never a time to us
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise PushAuthError(401, f"{label} rejected: claim {name} is {value!r}, not a time in seconds")
        times[name] = float(value)
    if times["iat"] > current + clock_skew_in_seconds:
        raise PushAuthError(401, f"{label} rejected: issued in the future (iat {times['iat']:.0f}, now {current:.0f})")
    if "nbf" in times and times["nbf"] > current + clock_skew_in_seconds:
        raise PushAuthError(401, f"{label} rejected: not valid yet (nbf {times['nbf']:.0f}, now {current:.0f})")
    if times["exp"] + clock_skew_in_seconds < current:
        raise PushAuthError(401, f"{label} rejected: token expired (exp {times['exp']:.0f}, now {current:.0f})")
    lifetime = times["exp"] - times["iat"]
    if lifetime > MAX_TOKEN_LIFETIME:
        raise PushAuthError(
            401,
            f"{label} rejected: lifetime {lifetime:.0f} s (exp - iat) is over the {MAX_TOKEN_LIFETIME} s of a "
            "Google ID token",
        )


def _json_segment(segment: str, what: str) -> dict[str, Any]:
    if not _BASE64URL.fullmatch(segment):
        raise PushAuthError(401, f"malformed {what}: not base64url")
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise PushAuthError(401, f"malformed {what}: not base64url JSON ({_brief(exc)})") from None
    if not isinstance(value, dict):
        raise PushAuthError(401, f"malformed {what}: not a JSON object")
    return value


def push_authorization(headers: Mapping[str, str]) -> str | None:
    """The one ``Authorization`` header of a push request. Raises PushAuthError 401 for two or more, and
    for an ``X-Serverless-Authorization`` header: Pub/Sub sends its token in ``Authorization`` only
    (https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions), and when Cloud Run checks
    the other header instead, the ``Authorization`` one reaches us unchecked.
    """
    getlist = getattr(headers, "getlist", None)  # Starlette's Headers keeps every copy; a dict keeps one
    if callable(getlist):
        values = list(getlist("authorization"))
    else:
        values = [v for k, v in headers.items() if k.lower() == "authorization"]
    if len(values) > 1:
        raise PushAuthError(401, f"push request has {len(values)} Authorization headers: send one")
    if any(k.lower() == SERVERLESS_AUTHORIZATION for k in headers):
        raise PushAuthError(401, "push request has an X-Serverless-Authorization header: Pub/Sub sends none")
    return values[0] if values else None


def _bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise PushAuthError(401, "missing Authorization header: a Pub/Sub push request must carry a Bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise PushAuthError(401, "malformed Authorization header: expected 'Bearer <token>'")
    if len(token) > MAX_TOKEN_CHARS:
        raise PushAuthError(401, f"malformed push token: longer than {MAX_TOKEN_CHARS} characters")
    return token


def _brief(exc: BaseException, limit: int = 200) -> str:
    """The library's reason, cut short: some reasons quote the whole token, which must not reach logs."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
