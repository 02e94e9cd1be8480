"""Shared helpers of the Google Cloud backend tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Calls:
    """What handlers saw, in order; safe to append from job threads and the event loop."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g} s; handlers saw {self.items!r}")
                self._cond.wait(left)
            return list(self.items)
