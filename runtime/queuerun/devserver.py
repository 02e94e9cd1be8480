"""``queuerun dev``: the app's HTTP endpoints, WebSocket and workers on one port, reloading on code change.

The embedded backend keeps its state in a SQLite file, so a reload (or ``queuerun push`` from
another terminal) loses and misses no job. Each finished attempt prints one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from .settings import ENV

TARGET_VAR: Final = "QUEUERUN_DEV_TARGET"
STATE_VAR: Final = "QUEUERUN_DEV_STATE"


def _job_lines() -> None:
    """One readable line per finished attempt: queue, group, job id, attempt, duration, outcome."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log = logging.getLogger("queuerun")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def create_dev_app() -> object:
    """uvicorn factory: builds the dev ASGI app from the target and state file in the environment."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route, WebSocketRoute

    from .endpoint import HTTP_PREFIX, AppHttp
    from .server.serve import load_app
    from .server.websocket import WEBSOCKET_PATH, websocket_app

    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    app = load_app(os.environ[TARGET_VAR])
    local = app.local(state_file=os.environ[STATE_VAR])

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        with local:
            print(f"queuerun dev: app {app.name!r}, queues: {', '.join(s.name for s in app.specs)}", flush=True)
            yield

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"app": app.name, "backend": "embedded", "pending": local.backend.store.pending_count()})

    _job_lines()
    routes = [
        Route("/_health", health),
        Mount(HTTP_PREFIX, app=AppHttp(app)),
        WebSocketRoute(WEBSOCKET_PATH, websocket_app(app)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def run_dev(target: str, *, host: str, port: int, state_file: str, reload: bool) -> None:
    import uvicorn

    from .hosting import warn_if_exposed

    warn_if_exposed(host, server="queuerun dev")
    os.environ[TARGET_VAR] = target
    os.environ[STATE_VAR] = state_file
    os.environ.setdefault(ENV.BACKEND, "embedded")
    uvicorn.run(
        "queuerun.devserver:create_dev_app",
        factory=True,
        host=host,
        port=port,
        reload=reload,
        reload_dirs=[str(Path.cwd())] if reload else None,
        log_level="warning",
    )
