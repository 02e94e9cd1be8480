"""Backends: where jobs are queued. ``create_backend`` picks one from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..settings import Settings
from .base import Backend, DeadLetter, PushBatchError

if TYPE_CHECKING:
    from ..app import App


def create_backend(settings: Settings, app: App | None = None) -> Backend:
    """The backend the settings select; Google clients are imported only for ``gcp``.

    ``app`` names the topics the Google Cloud backend publishes to (topic ids carry the app name).
    """
    if settings.backend == "gcp":
        from .gcp import GcpBackend

        backend = GcpBackend.from_settings(settings, app_name=app.name if app is not None else None)
        if app is not None:
            backend.bind(app)
        return backend
    from .embedded import EmbeddedBackend

    return EmbeddedBackend(state_file=settings.state_file)


__all__ = ["Backend", "DeadLetter", "PushBatchError", "create_backend"]
