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
from typing import TYPE_CHECKING, Final

from .settings import ENV

if TYPE_CHECKING:
    from .app import App

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
            print(_access_line(app, http.allow_anonymous), flush=True)
            yield

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"app": app.name, "backend": "embedded", "pending": local.backend.store.pending_count()})

    _job_lines()
    http = AppHttp(app)
    routes = [
        Route("/_health", health),
        Mount(HTTP_PREFIX, app=http),
        WebSocketRoute(WEBSOCKET_PATH, websocket_app(app)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _access_line(app: App, allow_anonymous: bool) -> str:
    """Who may post to the app's HTTP queues here: as on a deployed service, unless told otherwise."""
    if allow_anonymous:
        return f"queuerun dev: {ENV.ALLOW_ANONYMOUS} is set: anonymous posts reach every HTTP queue"
    public = [s.name for s in app.specs if s.http and s.public]
    closed = [s.name for s in app.specs if s.http and not s.public]
    if not closed:
        return "queuerun dev: every HTTP queue is public=True: anonymous posts are accepted"
    return (
        f"queuerun dev: HTTP queues {closed} refuse anonymous posts (401) as on a deployed service; "
        f"public: {public or 'none'}; {ENV.ALLOW_ANONYMOUS}=1 opens them all for development"
    )


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
