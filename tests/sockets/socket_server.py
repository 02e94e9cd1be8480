"""An app served by a uvicorn subprocess in the two-server test: push server plus ``/_ws``.

Run as ``uvicorn socket_server:asgi`` with SOCKET_TEST_APP (the app name), SERVER_NAME, and the
emulator settings in the environment. The composition is the one the server will have: the push
server's Starlette app with the WebSocket endpoint at ``/_ws``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from queuerun import App, JobMetadata, socket
from queuerun.endpoint import HttpRequest
from queuerun.server.app import create_push_app
from queuerun.server.websocket import WEBSOCKET_PATH, websocket_app


def authenticate(request: HttpRequest) -> str | None:
    return request.query.get("user") or None


def build(name: str, settings: Mapping[str, str] | None = None, server: str = "test") -> App:
    app = App(name, authenticate=authenticate, settings=settings)

    @app.queue("notify")
    def notify(job: dict[str, Any], meta: JobMetadata) -> None:
        for i in range(job["count"]):
            socket.send({"seq": i, "ran_on": server})

    return app


def serve(app: App) -> Starlette:
    asgi = create_push_app(app)
    asgi.router.routes.append(WebSocketRoute(WEBSOCKET_PATH, websocket_app(app)))
    return asgi


if "SOCKET_TEST_APP" in os.environ:
    asgi = serve(build(os.environ["SOCKET_TEST_APP"], server=os.environ.get("SERVER_NAME", "?")))
