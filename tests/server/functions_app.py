"""The app the functions-framework target tests serve (``QUEUERUN_APP=tests.server.functions_app:app``)."""

from __future__ import annotations

from typing import Any

from queuerun import App

# The emulator's setting: these tests are about the target's plumbing, not about push tokens.
# Insecure push needs an emulator host (the emulator sends no token); nothing here connects to it.
app = App(
    "fnapp",
    settings={
        "QUEUERUN_INSECURE_PUSH": "1",
        "GOOGLE_CLOUD_PROJECT": "test-project",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
    },
)
received: list[Any] = []


@app.queue("emails")
def emails(payload: Any) -> None:
    received.append(payload)
