"""A ready ``authenticate`` hook for Google-signed ID tokens: ``App(..., authenticate=google_id_token(aud))``.

Callers send ``Authorization: Bearer <ID token>``: users signed in with Google (the token Google
Sign-In gives your web client), service accounts (``google.oauth2.id_token.fetch_id_token`` or the
metadata server), or clients reaching the service through IAP's programmatic access with a Google
OIDC token. The hook checks the token's signature against Google's certificates (fetched over the
network and cached as long as Google allows, shared with push verification: see
:mod:`queuerun.server.oidc`), its expiry, its audience and its issuer, then answers:

    no Authorization header         None: the request is anonymous
    a token Cloud Run checked        None (its signature is gone); on an IAM-protected service the
      (SIGNATURE_REMOVED_BY_GOOGLE)    runtime names the invoker instead (queuerun.invoker)
    a valid token                   the user id: the ``sub`` claim, or the email with ``user_claim="email"``
    a bad, expired or foreign token AuthenticationError(401)
    a valid token of someone not    AuthenticationError(403)
      in allowed_emails/allowed_domains
    Google's certificates unreachable (and none cached)  RequestRejected(503)

``allowed_emails`` and ``allowed_domains`` together form one allow list: a token passes when its
verified email is listed, or its domain is. A domain matches the token's ``hd`` claim (the Google
Workspace domain, which Google asserts), or for service accounts the domain of their email (Google
owns ``*.gserviceaccount.com``). A consumer Google account's email domain alone never matches: anyone
can register one under any address.

To require a user, wrap the hook or check ``meta.user`` in the handler: anonymous requests pass here.
Verification may fetch certificates, so the hook runs it in a worker thread and never blocks the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio.to_thread

from .errors import AuthenticationError, ConfigurationError, PushAuthError, RequestRejected
from .server import oidc
from .server.oidc import MAX_TOKEN_CHARS, GoogleCerts
from .server.oidc import HttpRequest as CertsTransport

log = logging.getLogger("queuerun.http")

UserClaim = Literal["sub", "email"]
SERVICE_ACCOUNT_DOMAIN = ".gserviceaccount.com"


class HasHeaders(Protocol):
    """Any request with a headers mapping: queuerun's HttpRequest, Starlette's, Flask's."""

    @property
    def headers(self) -> Mapping[str, str]: ...


def decode_google_token(
    token: str, certs: GoogleCerts, audience: str | Collection[str], *, clock_skew_in_seconds: int = 10
) -> dict[str, Any]:
    """The claims of a Google-signed token: signature, expiry, audience and issuer checked.

    Raises AuthenticationError(401) for a bad token, RequestRejected(503) without certificates.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError(f"malformed ID token: longer than {MAX_TOKEN_CHARS} characters")
    audiences = audience if isinstance(audience, str) else list(audience)
    try:
        return oidc.decode_google_token(
            token, certs, audiences, clock_skew_in_seconds=clock_skew_in_seconds, label="ID token"
        )
    except PushAuthError as exc:
        # The whole reason goes to the log; callers are not told which audience was expected.
        log.info("ID token refused: %s", exc)
        if exc.status == 503:
            raise RequestRejected(503, "cannot verify ID tokens now, try again") from None
        raise AuthenticationError(exc.public) from None


@dataclass(frozen=True)
class GoogleIdTokenAuth:
    """The hook :func:`google_id_token` returns; ``verify`` is the same check, synchronous."""

    audience: str | tuple[str, ...]
    certs: GoogleCerts
    allowed_emails: frozenset[str] | None = None
    allowed_domains: frozenset[str] | None = None
    user_claim: UserClaim = "sub"
    clock_skew_in_seconds: int = 10

    async def __call__(self, request: HasHeaders) -> str | None:
        authorization = request.headers.get("authorization")
        if authorization is None:
            return None
        if authorization.strip().endswith("." + oidc.SIGNATURE_REMOVED):
            # Cloud Run's invoker check took this token and removed its signature: it is not ours to verify.
            # Anonymous here; on an IAM-protected service the runtime then names the invoker (queuerun.invoker).
            return None
        return await anyio.to_thread.run_sync(self.verify, authorization)

    def verify(self, authorization: str) -> str:
        """The user id for an ``Authorization`` header value, or AuthenticationError (401/403)."""
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("malformed Authorization header: expected 'Bearer <Google ID token>'")
        claims = decode_google_token(token, self.certs, self.audience, clock_skew_in_seconds=self.clock_skew_in_seconds)
        email = claims.get("email")
        verified = isinstance(email, str) and claims.get("email_verified") is True
        if self.allowed_emails is not None or self.allowed_domains is not None:
            self._check_allowed(email if verified else None, claims.get("hd"))
        if self.user_claim == "email":
            if not isinstance(email, str):
                raise AuthenticationError("ID token has no email claim: request one with the 'email' scope")
            if not verified:
                raise AuthenticationError(f"ID token's email {email!r} is not verified", status=403)
            return email
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError("ID token rejected: it has no 'sub' claim")
        return subject

    def _check_allowed(self, email: str | None, hosted_domain: Any) -> None:
        if email is not None and email.casefold() in (self.allowed_emails or ()):
            return
        domains = self.allowed_domains or frozenset()
        if isinstance(hosted_domain, str) and hosted_domain.casefold() in domains:
            return
        domain = email.rpartition("@")[2].casefold() if email is not None else ""
        if domain.endswith(SERVICE_ACCOUNT_DOMAIN) and domain in domains:
            return
        who = email or "a token without a verified email"
        raise AuthenticationError(f"{who} is not allowed here (not in allowed_emails or allowed_domains)", status=403)


def google_id_token(
    audience: str | Collection[str],
    *,
    allowed_emails: Collection[str] | None = None,
    allowed_domains: Collection[str] | None = None,
    user_claim: UserClaim = "sub",
    certs: GoogleCerts | None = None,
    request: CertsTransport | None = None,
    clock_skew_in_seconds: int = 10,
) -> GoogleIdTokenAuth:
    """An ``authenticate`` hook accepting Google-signed ID tokens for ``audience`` (see the module docstring).

    ``audience`` is your OAuth client id (Google Sign-In) or the URL callers ask a token for (service
    accounts, IAP programmatic access); several may be given. ``certs`` shares a certificate cache,
    ``request`` supplies the HTTP transport that fetches them (tests); pass one or neither.
    """
    audiences = (audience,) if isinstance(audience, str) else tuple(audience)
    problems = []
    if not audiences or not all(isinstance(a, str) and a.strip() for a in audiences):
        problems.append(f"audience must be a non-empty string or strings, got {audience!r}")
    if user_claim not in ("sub", "email"):
        problems.append(f"user_claim must be 'sub' or 'email', got {user_claim!r}")
    for name, values in (("allowed_emails", allowed_emails), ("allowed_domains", allowed_domains)):
        if isinstance(values, str):
            problems.append(f"{name} must be a collection of strings, not the string {values!r}")
        elif values is not None and not all(isinstance(v, str) and v.strip() for v in values):
            problems.append(f"{name} must hold non-empty strings, got {values!r}")
    if certs is not None and request is not None:
        problems.append("pass certs or request, not both")
    if problems:
        raise ConfigurationError([f"google_id_token: {problem}" for problem in problems])

    def folded(values: Collection[str] | None) -> frozenset[str] | None:
        return None if values is None else frozenset(v.strip().lstrip("@").casefold() for v in values)

    return GoogleIdTokenAuth(
        audience=audiences[0] if len(audiences) == 1 else audiences,
        certs=certs if certs is not None else GoogleCerts(request),
        allowed_emails=folded(allowed_emails),
        allowed_domains=folded(allowed_domains),
        user_claim=user_claim,
        clock_skew_in_seconds=clock_skew_in_seconds,
    )
