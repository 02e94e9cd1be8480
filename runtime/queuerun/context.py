"""Context carried into handlers: which app and user a nested push belongs to."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import App


@dataclass(frozen=True)
class JobContext:
    app: App
    queue: str
    user: str | None


@dataclass(frozen=True)
class LoadingContext:
    """Set while a ``queues/<name>.py`` file executes, so ``queues.self()`` knows its queue."""

    app: App
    queue: str


current_job: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("queuerun_job", default=None)
current_loading: contextvars.ContextVar[LoadingContext | None] = contextvars.ContextVar(
    "queuerun_loading", default=None
)
# Set by the HTTP layer once a request is authenticated: jobs it pushes carry this user.
current_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("queuerun_user", default=None)


@contextmanager
def job_context(ctx: JobContext) -> Iterator[None]:
    token = current_job.set(ctx)
    user_token = current_user.set(ctx.user)
    try:
        yield
    finally:
        current_user.reset(user_token)
        current_job.reset(token)


def inherited_user() -> str | None:
    return current_user.get()
