"""The app the functions-framework target tests serve (``QUEUERUN_APP=tests.server.functions_app:app``)."""

from __future__ import annotations

from typing import Any

from queuerun import App

# The emulator's setting: these tests are about the target's plumbing, not about push tokens.
app = App("fnapp", settings={"QUEUERUN_INSECURE_PUSH": "1", "GOOGLE_CLOUD_PROJECT": "test-project"})
received: list[Any] = []


@app.queue("emails")
def emails(payload: Any) -> None:
    received.append(payload)
