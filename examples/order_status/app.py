"""Order status: a job tells its user, live, how their order is going (preparing, packaging, shipped).

The page (index.html) opens a WebSocket to ``/_ws`` and posts an order to the ``orders`` queue's
HTTP endpoint; the job's ``socket.send`` calls reach that page, whichever instance runs the job.

Run it locally (embedded backend, no cloud account): ``python -m examples.order_status.app``
(or ``queuerun dev examples.order_status.app:app --port 8000``: the dev server serves the
``index.html`` next to this file at ``/``), then open http://127.0.0.1:8000/?token=demo-alice in a
browser. Without a token the ``orders`` queue (not ``public=True``) refuses the post with 401. A job
pushed from code without a user still runs: its ``socket.send`` calls reach nobody (a warning says
so once).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from queuerun import App, JobMetadata, socket
from queuerun.endpoint import HttpRequest
from queuerun.errors import AuthenticationError

STEP_SECONDS = float(os.environ.get("ORDER_STEP_SECONDS", "1.0"))  # how long each step pretends to take


def authenticate(request: HttpRequest) -> str | None:
    """Demo tokens ``demo-<user>``: from the query string (WebSocket) or ``Authorization: Bearer`` (HTTP).

    A real app verifies a session cookie or a signed token here.
    """
    token = request.query.get("token") or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not token:
        return None
    if not token.startswith("demo-") or len(token) == len("demo-"):
        raise AuthenticationError("unknown token: use demo-<your name>")
    return token.removeprefix("demo-")


app = App("orders", authenticate=authenticate)


@app.queue("orders", http=True, accepts=["application/json"])
def process_order(order: dict[str, Any], meta: JobMetadata) -> None:
    """Runs after the order was queued by an authenticated user: tells that user each step."""
    socket.send({"id": order["id"], "status": "preparing"})
    time.sleep(STEP_SECONDS)  # prepareOrder()
    socket.send({"id": order["id"], "status": "packaging"})
    time.sleep(STEP_SECONDS)  # packageAndShip()
    socket.send({"id": order["id"], "status": "shipped"})


def main() -> None:
    """``python -m examples.order_status.app [PORT]``: ``queuerun dev`` for this app, page included."""
    from queuerun.cli import main as queuerun

    port = sys.argv[1] if len(sys.argv) > 1 else "8000"
    print(f"order status demo: open http://127.0.0.1:{port}/?token=demo-alice", flush=True)
    sys.exit(queuerun(["dev", "examples.order_status.app:app", "--port", port, "--no-reload"]))


if __name__ == "__main__":
    main()
