"""An app with a pull queue (exactly-once, with an HTTP endpoint to post jobs) and a push queue."""

from __future__ import annotations

from typing import Any

from queuerun import App

app = App("pullapp")


@app.queue("ledger", delivery="pull", exactly_once=True, http=True, public=True)
def ledger(payload: Any) -> None:
    pass


@app.queue("notes", http=True, public=True)
def notes(payload: Any) -> None:
    pass
