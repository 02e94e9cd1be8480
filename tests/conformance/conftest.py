from __future__ import annotations

import itertools

import pytest

_app_numbers = itertools.count()


@pytest.fixture
def app_name() -> str:
    """A fresh app name per test, so cloud resources of two tests never collide."""
    return f"conf{next(_app_numbers)}"
