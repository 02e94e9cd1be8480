"""Backends: where jobs are queued. ``create_backend`` picks one from settings."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..settings import Settings
from .base import Backend, DeadLetter, PushBatchError

if TYPE_CHECKING:
    from ..app import App
    from ..running_dev import RunningDev


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
    # No file: each push goes to the `queuerun dev` of this app running from this folder, or refuses.
    from .unserved import UnservedBackend

    return UnservedBackend(app)


def running_dev_backend(running: RunningDev, app: App) -> Backend:
    """A backend that queues into the running ``queuerun dev``: its state file, or its emulators."""
    if running.on_emulators:
        return create_backend(Settings.from_environ({**os.environ, **running.settings}), app)
    from .embedded import EmbeddedBackend

    return EmbeddedBackend(state_file=running.state_file)


__all__ = ["Backend", "DeadLetter", "PushBatchError", "create_backend"]
