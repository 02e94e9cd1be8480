"""``queuerun dev``: the app's HTTP endpoints, WebSocket and workers on one port, reloading on code change.

The embedded backend keeps its state in a SQLite file, so a reload (or ``queuerun push`` from
another terminal) loses and misses no job. Each finished attempt prints one line. While it runs,
``.queuerun/<app>.dev.json`` tells pushes from other processes in the same folder where its queue is
(:mod:`queuerun.running_dev`).

The port is bound before the app starts, so a port in use fails before any job runs. A reload that
cannot import the app (a syntax error, say) serves 503 with the error until the next change.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .errors import ConfigurationError
from .settings import ENV

if TYPE_CHECKING:
    from .app import App

TARGET_VAR: Final = "QUEUERUN_DEV_TARGET"
STATE_VAR: Final = "QUEUERUN_DEV_STATE"
URL_VAR: Final = "QUEUERUN_DEV_URL"
PAGE: Final = "index.html"  # served at / when it sits next to the app's module


def _job_lines() -> None:
    """One readable line per finished attempt: queue, group, job id, attempt, duration, outcome."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log = logging.getLogger("queuerun")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _broken_app(error: str) -> object:
    """What a reload that cannot load the app serves: 503 and the error, on every path."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def unavailable(_: Request) -> JSONResponse:
        return JSONResponse({"error": f"queuerun dev cannot load the app: {error}"}, status_code=503)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", unavailable, methods=methods)])


def page_of(module_file: str | None) -> Path | None:
    """The ``index.html`` next to the app's module, if there is one."""
    if not module_file:
        return None
    page = Path(module_file).parent / PAGE
    return page if page.is_file() else None


def create_dev_app() -> object:
    """uvicorn factory: builds the dev ASGI app from the target and state file in the environment."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

    from .endpoint import HTTP_PREFIX, AppHttp
    from .server.serve import load_app
    from .server.websocket import WEBSOCKET_PATH, websocket_app

    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    url = os.environ.get(URL_VAR, "")
    try:
        app = load_app(os.environ[TARGET_VAR])
    except Exception as exc:  # a broken edit: say so on every request instead of leaving them hanging
        error = str(exc) if isinstance(exc, ConfigurationError) else f"{type(exc).__name__}: {exc}"
        print(f"queuerun dev: cannot load the app; answering 503 until the next change:\n{traceback.format_exc()}")
        return _broken_app(error)
    local = app.local(state_file=os.environ[STATE_VAR])
    page = page_of(getattr(sys.modules.get(os.environ[TARGET_VAR].partition(":")[0]), "__file__", None))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        with local:
            queues = ", ".join(s.name for s in app.specs)
            print(f"queuerun dev: app {app.name!r} at {url} (queues: {queues})", flush=True)
            state = os.environ[STATE_VAR]
            print(
                f"queuerun dev: jobs in {state}; pushes from this folder go there "
                f"(from elsewhere: export {ENV.STATE_FILE}={state})",
                flush=True,
            )
            if page is not None:
                print(f"queuerun dev: page {url}/ ({page})", flush=True)
            print(_access_line(app, http.allow_anonymous), flush=True)
            yield

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"app": app.name, "backend": "embedded", "pending": local.backend.store.pending_count()})

    async def serve_page(_: Request) -> Response:
        assert page is not None
        return FileResponse(page, media_type="text/html")

    _job_lines()
    http = AppHttp(app)
    routes: list[BaseRoute] = [
        Route("/_health", health),
        Mount(HTTP_PREFIX, app=http),
        WebSocketRoute(WEBSOCKET_PATH, websocket_app(app)),
    ]
    if page is not None:
        routes.append(Route("/", serve_page))
    return Starlette(routes=routes, lifespan=lifespan)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or ConfigurationError saying the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror}; stop what uses it or pass --port N"
        ) from None
    sock.listen(2048)
    return sock


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
    """Serve until interrupted. Raises ConfigurationError, before running any job, if the port is taken."""
    import uvicorn

    from .hosting import warn_if_exposed

    warn_if_exposed(host, server="queuerun dev")
    sock = bind(host, port)
    os.environ[TARGET_VAR] = target
    os.environ[STATE_VAR] = state_file
    os.environ[URL_VAR] = f"http://{host}:{port}"
    os.environ.setdefault(ENV.BACKEND, "embedded")
    if reload:
        sock.close()  # uvicorn's reloader binds it again itself, then starts the app in a child
        uvicorn.run(
            "queuerun.devserver:create_dev_app",
            factory=True,
            host=host,
            port=port,
            reload=True,
            reload_dirs=[str(Path.cwd())],
            log_level="warning",
        )
        return
    config = uvicorn.Config("queuerun.devserver:create_dev_app", factory=True, log_level="warning")
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
