from __future__ import annotations

import itertools

import pytest

from .harness import EmbeddedHarness, Harness

HARNESSES: list[Harness] = [EmbeddedHarness(name="embedded", scale=1.0, retry_floor=0.0)]

_app_numbers = itertools.count()


@pytest.fixture(params=HARNESSES, ids=lambda h: h.name)
def harness(request: pytest.FixtureRequest) -> Harness:
    h: Harness = request.param
    return h


@pytest.fixture
def app_name() -> str:
    """A fresh app name per test, so cloud resources of two tests never collide."""
    return f"conf{next(_app_numbers)}"
