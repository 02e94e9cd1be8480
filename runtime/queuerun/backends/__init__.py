"""Backends: where jobs are queued. ``create_backend`` picks one from settings."""

from __future__ import annotations

import os
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

    if settings.state_file:
        return EmbeddedBackend(state_file=settings.state_file)
    # No file: push to the `queuerun dev` of this app running from this folder, or refuse.
    from .. import running_dev
    from .unserved import UnservedBackend

    running = running_dev.find(app.name) if app is not None else None
    if running is not None and running.on_emulators:
        return create_backend(Settings.from_environ({**os.environ, **running.settings}), app)
    if running is not None and running.state_file:
        return EmbeddedBackend(state_file=running.state_file)
    return UnservedBackend(app.name if app is not None else None)


__all__ = ["Backend", "DeadLetter", "PushBatchError", "create_backend"]
