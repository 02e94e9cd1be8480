"""How many request-body bytes one process handles at once: past the budget, large bodies wait their turn.

A body costs several times its size while it is read, parsed, serialized and handed to the Pub/Sub
client (measured 8-10x for 5 MiB bodies: benchmarks/hostile_memory.py). Cloud Run sends up to 80
requests at once to one instance by default, so without a bound eighty 5 MiB bodies would ask for
gigabytes of a 512 MiB instance. A request reserves its declared ``Content-Length`` (the body limit
when it declares none) before its body is read, and gives it back once answered. Small bodies never
wait, so ordinary traffic is not held up behind uploads.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

# 24 MiB of bodies in flight: four 5 MiB bodies at once, ~300 MiB peak at worst on a 512 MiB instance.
DEFAULT_BUDGET: Final = 24 * 1024 * 1024
SMALL_BODY: Final = 64 * 1024  # never waits


class _LoopState:
    def __init__(self) -> None:
        self.used = 0
        self.changed = asyncio.Condition()


class BodyBudget:
    """A byte budget shared by the requests of one event loop (asyncio primitives belong to one loop)."""

    def __init__(self, limit: int = DEFAULT_BUDGET) -> None:
        self.limit = limit
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        return state

    def in_use(self) -> int:
        """Bytes reserved on the running loop (for tests and diagnostics)."""
        return self._state().used

    @asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes of the budget (at most all of it) while the block runs."""
        if size <= SMALL_BODY:
            yield
            return
        size = min(size, self.limit)
        state = self._state()
        async with state.changed:
            await state.changed.wait_for(lambda: state.used + size <= self.limit)
            state.used += size
        try:
            yield
        finally:
            async with state.changed:
                state.used -= size
                state.changed.notify_all()


BODIES: Final = BodyBudget()
