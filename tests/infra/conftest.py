"""Fixtures of the component tests; the mocks and graph helpers live in ``support``."""

from __future__ import annotations

import asyncio

import pulumi
import pytest

from .support import Mocks


@pytest.fixture
def mocks() -> Mocks:
    """Fresh mocks for tests that construct components directly (e.g. to see them refuse)."""
    m = Mocks()
    pulumi.runtime.set_mocks(m, project="queuerun", stack="test", preview=False)
    pulumi.runtime.set_all_config({})
    return m


def _ensure_event_loop() -> None:
    # Pulumi's mocks use the main thread's current event loop; an earlier ``asyncio.run`` (in
    # another test module) leaves none behind.
    try:
        usable = not asyncio.get_event_loop_policy().get_event_loop().is_closed()
    except RuntimeError:
        usable = False
    if not usable:
        asyncio.set_event_loop(asyncio.new_event_loop())


@pytest.fixture(autouse=True, scope="module")
def event_loop_for_module_fixtures() -> None:
    _ensure_event_loop()


@pytest.fixture(autouse=True)
def event_loop_for_pulumi() -> None:
    _ensure_event_loop()
