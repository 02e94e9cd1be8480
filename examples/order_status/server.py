"""Serves the order-status page, the ``orders`` queue over HTTP and the ``/_ws`` WebSocket endpoint.

``python examples/order_status/server.py [PORT]`` runs everything in this process on the embedded
backend (``app.local()``). On Cloud Run the queuerun server provides ``/_ws`` and ``/queues``; only
the page would be served by your own app.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from app import app  # this example's app.py (its folder is on sys.path: run from there or as a script)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute

from queuerun.endpoint import AppHttp
from queuerun.server.websocket import WEBSOCKET_PATH, websocket_app

PAGE = Path(__file__).parent / "index.html"


async def page(request: Request) -> Response:
    return FileResponse(PAGE, media_type="text/html")


@contextlib.asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    with app.local():  # the embedded backend: jobs run in this process
        yield


asgi = Starlette(
    routes=[
        Route("/", page),
        WebSocketRoute(WEBSOCKET_PATH, websocket_app(app)),
        Mount("/queues", app=AppHttp(app)),
    ],
    lifespan=lifespan,
)


if __name__ == "__main__":
    import uvicorn

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f"order status demo: http://127.0.0.1:{port}/?token=demo-alice", flush=True)
    uvicorn.run(asgi, host="127.0.0.1", port=port)
