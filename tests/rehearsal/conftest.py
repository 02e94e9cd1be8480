"""Fixtures of the rehearsal: the test's Google, and the examples' graphs under the Pulumi mocks."""

from __future__ import annotations

import asyncio

import pytest
from rehearsal import Google

from queuerun.server import oidc


def ensure_event_loop() -> None:
    # Pulumi's mocks use the main thread's current event loop; an earlier ``asyncio.run`` leaves none.
    try:
        usable = not asyncio.get_event_loop_policy().get_event_loop().is_closed()
    except RuntimeError:
        usable = False
    if not usable:
        asyncio.set_event_loop(asyncio.new_event_loop())


@pytest.fixture(scope="session")
def google() -> Google:
    return Google()


@pytest.fixture(autouse=True)
def google_certs_endpoint(google: Google, monkeypatch: pytest.MonkeyPatch) -> None:
    """Google's certificates endpoint, as the push server's own verifier fetches it: the test's key."""
    monkeypatch.setattr(oidc, "_default_request", lambda: google.endpoint)


@pytest.fixture(autouse=True)
def event_loop_for_pulumi() -> None:
    ensure_event_loop()
