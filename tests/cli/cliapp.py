"""An app for the CLI tests: an HTTP queue, a FIFO queue and a queue whose jobs always fail."""

from __future__ import annotations

from typing import Any

from queuerun import App

app = App("cliapp")


@app.queue("notes", http=True)
def notes(payload: Any) -> None:
    pass


@app.queue("orders.fifo", timeout=30)
def orders(payload: Any) -> None:
    pass


@app.queue("broken", min_backoff=0, max_backoff=0)
def broken(payload: Any) -> None:
    raise RuntimeError(f"cannot handle {payload!r}")
