"""The caller Cloud Run's invoker IAM check admitted, as a user id, on services that have that check.

A service deployed with ``access="iam"`` or ``"private"`` is IAM-protected: Cloud Run admits a request
only with a Google ID token of a member holding ``roles/run.invoker``, checks it (signature,
audience, expiry, role) and forwards it with its signature replaced by ``SIGNATURE_REMOVED_BY_GOOGLE``
(docs/platform-facts.md fact 1: the behaviour is what the rehearsal plays and the push path relies on;
Google's sentence was not retrieved). Such a request is not anonymous: its user is the token's
verified ``email``. The component marks those deployments with ``QUEUERUN_PUSH_AUTH=cloud-run-iam``,
which the settings accept only on Cloud Run (``K_SERVICE``).

Nothing here is trusted anywhere else: on a public service (or off Cloud Run) a token with its
signature removed is one anyone can write, so this returns None there and the request stays anonymous.

Which header Cloud Run checked: ``Authorization``, or ``X-Serverless-Authorization`` when the caller
sends it (GoogleCloudPlatform/cloud-run-proxy PR #25; UNCONFIRMED from Google's own text). The checked
one always arrives with its signature removed; a caller can forge the other one to look the same.
So exactly one of the two may carry a removed signature: two such tokens are refused (401) rather
than guessed between, which holds whichever header Cloud Run prefers.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import AuthenticationError, PushAuthError
from .server.oidc import SERVERLESS_AUTHORIZATION, SIGNATURE_REMOVED, decode_stripped_token
from .settings import Settings

CLOCK_SKEW_SECONDS = 10


def iam_checked(settings: Settings) -> bool:
    """Whether Cloud Run's invoker check stands in front of this process (the component's setting)."""
    return settings.push_auth == "cloud-run-iam" and settings.on_cloud_run


def _stripped_token(value: str | None) -> str | None:
    scheme, _, token = (value or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.endswith("." + SIGNATURE_REMOVED):
        return None
    return token


def cloud_run_invoker(headers: Mapping[str, str], *, now: float | None = None) -> str | None:
    """The verified email of the token Cloud Run checked, or None when no header carries one.

    ``headers`` has lowercase names, one value each. Raises AuthenticationError(401) for two tokens
    with their signature removed, or for one whose claims are not a Google ID token's.
    """
    tokens = [t for t in (_stripped_token(headers.get(n)) for n in ("authorization", SERVERLESS_AUTHORIZATION)) if t]
    if not tokens:
        return None
    if len(tokens) > 1:
        raise AuthenticationError(
            "two ID tokens with their signature removed (Authorization and X-Serverless-Authorization): "
            "cannot tell which one Cloud Run checked"
        )
    try:
        claims = decode_stripped_token(
            tokens[0], None, clock_skew_in_seconds=CLOCK_SKEW_SECONDS, label="ID token", now=now
        )
    except PushAuthError as exc:
        raise AuthenticationError(str(exc)) from None
    email = claims.get("email")
    if not isinstance(email, str) or not email or claims.get("email_verified") is not True:
        raise AuthenticationError("ID token has no verified email")
    return email
