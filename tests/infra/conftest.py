"""Fixtures of the component tests; the mocks and graph helpers live in ``support``."""

from __future__ import annotations

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
