"""Generated attacks on the access checks: whatever a caller sends, the only outcomes are the documented
ones, and a sealed user survives no change to what the seal covers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queuerun.endpoint import header_map
from queuerun.errors import AuthenticationError, PushAuthError, RequestRejected
from queuerun.invoker import cloud_run_invoker
from queuerun.server.oidc import SIGNATURE_REMOVED, push_authorization
from queuerun.user_seal import A_USER_SEAL, UserSeal

SEAL = UserSeal(b"k" * 32, "app")
text = st.text(max_size=40)
header_names = st.sampled_from(["authorization", "Authorization", "x-serverless-authorization", "cookie", "x-other"])


def _segment(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


claims_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text)
stripped_tokens = st.builds(
    lambda header, claims: f"Bearer {_segment(header)}.{_segment(claims)}.{SIGNATURE_REMOVED}",
    st.dictionaries(st.sampled_from(["alg", "typ", "kid"]), claims_values, max_size=3),
    st.dictionaries(
        st.sampled_from(["iss", "aud", "email", "email_verified", "iat", "exp", "nbf", "sub"]),
        claims_values,
        max_size=8,
    ),
)
header_values = st.one_of(text, stripped_tokens, st.builds(lambda t: f"Bearer {t}", text))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["authorization", "x-serverless-authorization"]), header_values, max_size=2))
def test_the_invoker_is_an_email_none_or_a_401_whatever_the_headers(headers: dict[str, str]) -> None:
    try:
        user = cloud_run_invoker(headers)
    except AuthenticationError as exc:
        assert exc.status == 401
        return
    if user is not None:
        assert isinstance(user, str) and user
        stripped = [v for v in headers.values() if v.strip().endswith(SIGNATURE_REMOVED)]
        assert len(stripped) == 1  # never chosen between two


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(header_names, header_values), max_size=6))
def test_repeated_credentials_are_refused_never_picked_from(pairs: list[tuple[str, str]]) -> None:
    names = [n.lower() for n, _ in pairs]
    doubled = any(names.count(n) > 1 for n in ("authorization", "x-serverless-authorization"))
    try:
        headers = header_map(pairs)
    except RequestRejected as exc:
        assert doubled and exc.status == 400
    else:
        assert not doubled
        if names.count("cookie") > 1:
            assert headers["cookie"] == "; ".join(v for n, v in pairs if n.lower() == "cookie")
    try:
        push_authorization(dict(pairs) if not doubled else _multi(pairs))
    except PushAuthError as exc:
        assert exc.status == 401
        assert doubled or "x-serverless-authorization" in names


def _multi(pairs: list[tuple[str, str]]) -> Any:
    from starlette.datastructures import Headers

    return Headers(raw=[(n.lower().encode(), v.encode("utf-8", "replace")) for n, v in pairs])


SEALED_FIELDS = ["qr-queue", "qr-user", "qr-group", "qr-dedupe", "qr-queued-at", "qr-content-type", "qr-param-x"]


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries({name: text for name in SEALED_FIELDS}),
    st.binary(max_size=64),
    st.sampled_from([*SEALED_FIELDS, "data"]),
    text,
)
def test_a_seal_survives_no_change_to_what_it_covers(
    attributes: dict[str, str], data: bytes, changed: str, new_value: str
) -> None:
    sealed = {**attributes, A_USER_SEAL: SEAL.seal(attributes, data)}
    assert SEAL.verifies(sealed, data)
    if changed == "data":
        if new_value.encode() == data:
            return
        assert not SEAL.verifies(sealed, new_value.encode())
    else:
        if attributes[changed] == new_value:
            return
        assert not SEAL.verifies({**sealed, changed: new_value}, data)


@pytest.mark.parametrize("missing", ["qr-user", A_USER_SEAL])
def test_a_seal_or_user_alone_is_nothing(missing: str) -> None:
    attributes = {"qr-queue": "q", "qr-user": "alice"}
    sealed = {**attributes, A_USER_SEAL: SEAL.seal(attributes, b"")}
    del sealed[missing]
    assert not SEAL.verifies(sealed, b"")
