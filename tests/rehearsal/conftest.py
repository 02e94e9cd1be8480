"""Fixtures of the rehearsal: the test's Google, and the examples' graphs under the Pulumi mocks."""

from __future__ import annotations

import pytest
from rehearsal import Google

from queuerun.server import oidc
from queuerun_gcp.mocks import ensure_event_loop


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
