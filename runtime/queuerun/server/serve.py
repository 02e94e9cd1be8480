"""Running the push server: ``serve()`` under uvicorn, ``BackgroundServer`` in a thread, ``load_app``.

On SIGTERM (Cloud Run gives 10 s before SIGKILL) uvicorn stops accepting connections and lets
in-flight requests finish for up to ``grace`` seconds; a job still running after that is cut off
unanswered, which Pub/Sub treats as a nack and delivers again.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigurationError
from ..hosting import managed_host, warn_if_exposed
from ..settings import ENV
from .memory import pin_mmap_threshold

if TYPE_CHECKING:
    import uvicorn

    from ..app import App

SHUTDOWN_GRACE: Final = 8  # seconds; under Cloud Run's 10 s between SIGTERM and SIGKILL


def load_app(target: str | None = None, environ: Mapping[str, str] | None = None) -> App:
    """Import the App named by ``target`` or ``QUEUERUN_APP`` ("package.module:attribute")."""
    from ..app import App

    env = os.environ if environ is None else environ
    spec = target or env.get(ENV.APP, "")
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"setting {ENV.APP} must be 'module:attribute', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = "" if exc.name != module_name.split(".")[0] else " (run from the folder that holds it)"
        raise ConfigurationError(f"app {spec!r}: cannot import {module_name!r}: {exc}{where}") from exc
    except ConfigurationError:
        raise  # already names the queue file or setting at fault
    except Exception as exc:  # the app's own code failed: its file, line and frames
        from ..import_errors import describe

        raise ConfigurationError(f"app {spec!r}: importing {module_name!r} failed: {describe(exc)}") from exc
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            apps = sorted(name for name, v in vars(module).items() if isinstance(v, App))
            found = f"; Apps in {module_name!r}: {', '.join(apps)}" if apps else f"; {module_name!r} defines no App"
            raise ConfigurationError(f"app {spec!r}: module {module_name!r} has no attribute {part!r}{found}")
        value = getattr(value, part)
    if not isinstance(value, App):
        raise ConfigurationError(f"app {spec!r}: {attr!r} is {value!r}, not a queuerun App")
    return value


def _config(
    app: App, host: str, port: int, grace: int, push_options: Mapping[str, Any] | None = None, **options: Any
) -> uvicorn.Config:
    import uvicorn

    from .app import create_push_app

    return uvicorn.Config(
        create_push_app(app, **(push_options or {})),
        host=host,
        port=port,
        timeout_graceful_shutdown=max(1, grace),
        log_config=None,  # our JSON lines, not uvicorn's
        access_log=False,
        **options,
    )


def serve(
    app: App | None = None, *, host: str | None = None, port: int | None = None, grace: int = SHUTDOWN_GRACE
) -> None:
    """Serve ``app`` (default: ``QUEUERUN_APP``) until SIGTERM/SIGINT, logging Cloud Logging JSON.

    Binds ``0.0.0.0:$PORT`` on Cloud Run (``K_SERVICE`` set) and ``127.0.0.1:8080`` elsewhere.
    """
    import uvicorn

    from .logs import configure_logging

    configure_logging()
    pin_mmap_threshold()  # peak memory under large bodies: see queuerun.server.memory
    app = app or load_app()
    on_cloud_run = bool(os.environ.get(ENV.CLOUD_RUN_SERVICE))
    bind_host = host or ("0.0.0.0" if on_cloud_run else "127.0.0.1")
    if managed_host() is None:
        warn_if_exposed(bind_host, server="the push server", insecure_push=app.settings.insecure_push)
    bind_port = port if port is not None else int(os.environ.get("PORT", "8080"))
    uvicorn.Server(_config(app, bind_host, bind_port, grace)).run()


class BackgroundServer:
    """The push server on a loopback port in a thread, for tests, benchmarks and the dev server.

    ``with BackgroundServer(app) as server: server.url`` ... Stopping lets in-flight requests finish.
    """

    def __init__(
        self,
        app: App,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        grace: int = SHUTDOWN_GRACE,
        push_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``push_options`` go to :class:`~queuerun.server.app.PushServer`."""
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        import uvicorn

        self._server = uvicorn.Server(_config(app, self.host, self.port, grace, push_options))
        self._thread = threading.Thread(target=self._run, name="queuerun-push-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self._server.started and waited < timeout:
            if not self._thread.is_alive():
                raise RuntimeError("the push server thread exited during start-up")
            deadline.wait(0.01)
            waited += 0.01
        if not self._server.started:
            raise RuntimeError(f"the push server did not start within {timeout:g} s")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
