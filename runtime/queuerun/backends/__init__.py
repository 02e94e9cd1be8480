"""Backends: where jobs are queued. ``create_backend`` picks one from settings."""

from __future__ import annotations

from ..settings import Settings
from .base import Backend, DeadLetter, PushBatchError


def create_backend(settings: Settings) -> Backend:
    """The backend the settings select; Google clients are imported only for ``gcp``."""
    if settings.backend == "gcp":
        from .gcp import GcpBackend

        return GcpBackend.from_settings(settings)
    from .embedded import EmbeddedBackend

    return EmbeddedBackend(state_file=settings.state_file)


__all__ = ["Backend", "DeadLetter", "PushBatchError", "create_backend"]
