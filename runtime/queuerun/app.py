"""App: the registry of queues and handlers, and the module-level ``queues(name)`` resolver."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .context import LoadingContext, current_job, current_loading
from .errors import ConfigurationError, QueueNotFoundError, QueueRunError
from .handlers import Handler, HandlerInfo, inspect_handler
from .manifest import Manifest
from .names import app_name_problem
from .queue import Queue
from .settings import Settings
from .spec import QueueSpec, make_spec

if TYPE_CHECKING:
    from .backends.base import Backend
    from .local import LocalRun

# Request -> user id (or None for anonymous); may raise to reject with 401/403.
Authenticate = Callable[[Any], "str | Awaitable[str | None] | None"]

_apps: weakref.WeakSet[App] = weakref.WeakSet()


class App:
    """A queuerun application: its name prefixes every cloud resource."""

    def __init__(
        self,
        name: str,
        queues_dir: str | Path | None = None,
        *,
        authenticate: Authenticate | None = None,
        settings: Settings | Mapping[str, str] | None = None,
        http_max_body: int | None = None,
    ) -> None:
        from .endpoint import DEFAULT_MAX_BODY, MAX_BODY_CEILING

        problem = app_name_problem(name)
        if problem:
            raise ConfigurationError(problem)
        max_body = DEFAULT_MAX_BODY if http_max_body is None else http_max_body
        if isinstance(max_body, bool) or not isinstance(max_body, int) or not 1 <= max_body <= MAX_BODY_CEILING:
            raise ConfigurationError(
                f"app {name!r}: http_max_body must be 1 to {MAX_BODY_CEILING:,} bytes (below Pub/Sub's 10 MB), "
                f"got {http_max_body!r}"
            )
        self.http_max_body = max_body
        self.name = name
        self.authenticate = authenticate
        self._settings_source = settings
        self._settings: Settings | None = settings if isinstance(settings, Settings) else None
        self._specs: dict[str, QueueSpec] = {}
        self._handlers: dict[str, HandlerInfo] = {}
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        _apps.add(self)
        if queues_dir is not None:
            self._load_queues_dir(queues_dir, caller=inspect.stack()[1].filename)

    # -- declarations ---------------------------------------------------------------------
    def queue(self, name: str, **options: Any) -> Callable[[Handler], Queue]:
        """Declare a queue and register the decorated function (sync or async) as its handler."""
        spec = make_spec(name, **options)

        def register(func: Handler) -> Queue:
            return self._register(spec, func)

        return register

    def _register(self, spec: QueueSpec, func: Handler) -> Queue:
        if spec.name in self._specs:
            raise ConfigurationError(f"queue {spec.name!r} is declared twice in app {self.name!r}")
        info = inspect_handler(func, queue=spec.name)
        self._specs[spec.name] = spec
        self._handlers[spec.name] = info
        return Queue(self, spec, info)

    def _handler_info(self, name: str) -> HandlerInfo:
        try:
            return self._handlers[name]
        except KeyError:
            raise QueueNotFoundError(name, list(self._specs)) from None

    @property
    def specs(self) -> tuple[QueueSpec, ...]:
        return tuple(self._specs.values())

    def spec(self, name: str) -> QueueSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise QueueNotFoundError(name, list(self._specs)) from None

    def queues(self, name: str) -> Queue:
        """The queue declared as ``name``. Raises QueueNotFoundError."""
        spec = self.spec(name)
        return Queue(self, spec, self._handlers.get(name))

    def manifest(self) -> Manifest:
        return Manifest(app=self.name, queues=self.specs)

    # -- file convention --------------------------------------------------------------------
    def _load_queues_dir(self, queues_dir: str | Path, *, caller: str) -> None:
        path = Path(queues_dir)
        if not path.is_absolute():
            base = Path(caller).resolve().parent if caller and not caller.startswith("<") else Path.cwd()
            path = base / path
        if not path.is_dir():
            raise ConfigurationError(f"app {self.name!r}: queues_dir {str(path)!r} is not a directory")
        for file in sorted(path.glob("*.py")):
            if not file.name.startswith("_"):
                self._load_queue_file(file)

    def _load_queue_file(self, file: Path) -> None:
        name = file.name[: -len(".py")]
        module_name = f"queuerun_queues.{self.name}.{name}"
        module_spec = importlib.util.spec_from_file_location(module_name, file)
        if module_spec is None or module_spec.loader is None:
            raise ConfigurationError(f"queue file {str(file)!r} cannot be loaded")
        module = importlib.util.module_from_spec(module_spec)
        # Placeholder spec so queues.self() can build a reference while the module executes.
        token = current_loading.set(LoadingContext(self, name))
        try:
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        except QueueRunError:
            raise
        except Exception as exc:  # the user's code: name the file and show its frames, not ours
            from .import_errors import describe

            raise ConfigurationError(f"queue file {str(file)!r} failed to import: {describe(exc)}") from exc
        finally:
            current_loading.reset(token)
        handler = getattr(module, "handler", None)
        if handler is None or not callable(handler):
            raise ConfigurationError(f"queue file {str(file)!r} must define a function named 'handler'")
        config = getattr(module, "config", {}) or {}
        if not isinstance(config, Mapping):
            raise ConfigurationError(f"queue file {str(file)!r}: 'config' must be a dict, got {config!r}")
        self._register(make_spec(name, **dict(config)), handler)
        for value in vars(module).values():
            if isinstance(value, _SelfQueue) and value.app is self:
                value._bind()

    # -- backend ----------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            source = self._settings_source
            self._settings = Settings.from_environ(source if isinstance(source, Mapping) else None)
        return self._settings

    @property
    def backend(self) -> Backend:
        """The backend pushes go to: set by ``local()``, else chosen by settings on first use."""
        with self._backend_lock:
            if self._backend is None:
                from .backends import create_backend

                self._backend = create_backend(self.settings, self)
            return self._backend

    def use_settings(self, settings: Settings | Mapping[str, str]) -> None:
        """Replace the settings; a backend made from the old ones is stopped and made again on demand."""
        new = settings if isinstance(settings, Settings) else Settings.from_environ(settings)
        with self._backend_lock:
            old, self._backend = self._backend, None
            self._settings = new
        if old is not None:
            old.stop()

    def use_backend(self, backend: Backend | None) -> None:
        with self._backend_lock:
            self._backend = backend

    def local(self, *, state_file: str | Path | None = None, backoff: bool = True) -> LocalRun:
        """Run this app's jobs in-process on the embedded backend (a context manager).

        ``backoff=False``: retries run at once instead of after the queue's backoff (for tests).
        """
        from .local import LocalRun

        return LocalRun(self, state_file=state_file, backoff=backoff)

    def __repr__(self) -> str:
        return f"<App {self.name!r} queues={list(self._specs)}>"


class _SelfQueue(Queue):
    """The reference ``queues.self()`` returns: its spec is filled in once the file has loaded."""

    __slots__ = ("_bound",)

    def __init__(self, app: App, name: str) -> None:
        super().__init__(app, QueueSpec(name=name), None)
        self._bound = False

    def _bind(self) -> None:
        self.spec = self._app.spec(self.spec.name)
        self._bound = True


class _Queues:
    """``queues(name)`` resolves the current app; ``queues.self()`` returns the loading file's queue."""

    def __call__(self, name: str) -> Queue:
        return self._current_app(name).queues(name)

    def self(self) -> Queue:
        loading = current_loading.get()
        if loading is None:
            raise ConfigurationError(
                "queues.self() works only at the top level of a queues/<name>.py file loaded by App(queues_dir=...)"
            )
        return _SelfQueue(loading.app, loading.queue)

    @staticmethod
    def _current_app(name: str) -> App:
        return current_app(f"queues({name!r})", f"use app.queues({name!r}) instead")


def current_app(caller: str, alternative: str, error: type[QueueRunError] = ConfigurationError) -> App:
    """The running job's app, else the app whose queue file is loading, else the only App."""
    job = current_job.get()
    if job is not None:
        return job.app
    loading = current_loading.get()
    if loading is not None:
        return loading.app
    apps = list(_apps)
    if len(apps) == 1:
        return apps[0]
    if not apps:
        raise error(f"{caller}: no App exists yet; create App(...) first")
    names = ", ".join(sorted(a.name for a in apps))
    raise error(f"{caller}: {len(apps)} apps exist ({names}); {alternative}")


queues = _Queues()
