"""Fixtures of the component tests; the mocks and graph helpers live in ``support``."""

from __future__ import annotations

import pulumi
import pytest

from queuerun_gcp.mocks import ensure_event_loop

from .support import Mocks


@pytest.fixture
def mocks() -> Mocks:
    """Fresh mocks for tests that construct components directly (e.g. to see them refuse)."""
    m = Mocks()
    pulumi.runtime.set_mocks(m, project="queuerun", stack="test", preview=False)
    pulumi.runtime.set_all_config({})
    return m


# Pulumi's mocks use the main thread's current event loop; an earlier ``asyncio.run`` (in another test
# module) leaves none behind.
@pytest.fixture(autouse=True, scope="module")
def event_loop_for_module_fixtures() -> None:
    ensure_event_loop()


@pytest.fixture(autouse=True)
def event_loop_for_pulumi() -> None:
    ensure_event_loop()
