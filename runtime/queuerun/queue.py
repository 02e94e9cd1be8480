"""Queue references: ``group()`` and ``dedupe()`` return new references; ``push`` is the only I/O."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .context import inherited_user
from .errors import ConfigurationError, GroupIdRequiredError
from .handlers import HandlerInfo, convert_payload
from .limits import id_problem
from .spec import QueueSpec
from .wire import OutgoingJob, build_job

if TYPE_CHECKING:
    from .app import App
    from .endpoint import QueueHttp


def _check_id(queue: str, field: str, value: object) -> str:
    problem = id_problem(field, value)
    if problem is not None or not isinstance(value, str):
        raise ConfigurationError(f"queue {queue!r}: {problem}")
    return value


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _push_threads() -> ThreadPoolExecutor:
    """Threads for ``apush``. A push mostly waits (Pub/Sub's batch window, the round trip), so the
    event loop's default pool, min(32, CPUs + 4) threads, would cap an HTTP endpoint's throughput."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(64, thread_name_prefix="queuerun-push")
        return _executor


class Queue:
    """A reference to a declared queue, optionally bound to a group and a dedupe id."""

    __slots__ = ("_app", "_dedupe_id", "_group_id", "_info", "spec")

    def __init__(
        self,
        app: App,
        spec: QueueSpec,
        info: HandlerInfo | None,
        *,
        group_id: str | None = None,
        dedupe_id: str | None = None,
    ) -> None:
        self._app = app
        self.spec = spec
        self._info = info
        self._group_id = group_id
        self._dedupe_id = dedupe_id

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fifo(self) -> bool:
        return self.spec.fifo

    @property
    def app(self) -> App:
        return self._app

    @property
    def group_id(self) -> str | None:
        return self._group_id

    @property
    def dedupe_id(self) -> str | None:
        return self._dedupe_id

    @property
    def handler(self) -> HandlerInfo:
        """The handler, looked up at call time so a ``queues.self()`` reference sees it once bound."""
        info = self._info or self._app._handler_info(self.name)
        return info

    @property
    def http(self) -> QueueHttp:
        """This queue as an HTTP endpoint: an ASGI app (mount it anywhere), with ``flask_view()`` for Flask."""
        from .endpoint import QueueHttp

        return QueueHttp(self)

    def group(self, group_id: str) -> Queue:
        """A reference that pushes to ``group_id``. FIFO queues only."""
        if not self.fifo:
            raise ConfigurationError(
                f"queue {self.name!r} is a standard queue: group({group_id!r}) needs a FIFO queue (name ending '.fifo')"
            )
        _check_id(self.name, "group id", group_id)
        return Queue(self._app, self.spec, self._info, group_id=group_id, dedupe_id=self._dedupe_id)

    def dedupe(self, dedupe_id: str) -> Queue:
        """A reference whose pushes are deduplicated on ``dedupe_id`` within the queue's window."""
        _check_id(self.name, "dedupe id", dedupe_id)
        return Queue(self._app, self.spec, self._info, group_id=self._group_id, dedupe_id=dedupe_id)

    def _job(self, payload: Any, params: Mapping[str, Any] | None, user: str | None) -> OutgoingJob:
        if self.fifo and self._group_id is None:
            raise GroupIdRequiredError(self.name)
        job = build_job(
            self.name,
            payload,
            group_id=self._group_id,
            dedupe_id=self._dedupe_id,
            params=params,
            user=user if user is not None else inherited_user(),
        )
        info = self._info or self._app._handlers.get(self.name)
        if info is not None and info.payload_type is not None:
            # Validate at the door what the handler will get (the payload as decoded on delivery):
            # a job that cannot run must fail its push, not sit in dead letters.
            from .payload import decode

            convert_payload(info, decode(job.data, job.content_type), queue=self.name)
        if self.fifo and job.dedupe_id is None:
            from .payload import content_hash

            # FIFO queues dedupe by default on a hash of the serialized payload, as queue-run did.
            job = OutgoingJob(**{**job.__dict__, "dedupe_id": content_hash(job.data, job.content_type)})
        return job

    def push(self, payload: Any, *, params: Mapping[str, Any] | None = None, user: str | None = None) -> str:
        """Queue one job; returns its id once it is durably queued. Raises a PushError otherwise, or
        PayloadValidationError when the handler's typed parameter would refuse the payload."""
        job = self._job(payload, params, user)
        return self._app.backend.enqueue(self.spec, [job])[0]

    async def apush(self, payload: Any, *, params: Mapping[str, Any] | None = None, user: str | None = None) -> str:
        """``push`` for async code: the publish waits in a worker thread, not on the event loop."""
        loop = asyncio.get_running_loop()
        # Serializing (and validating) a large payload takes CPU: in the thread too, with this
        # task's context (the inherited user is a context variable).
        call = functools.partial(contextvars.copy_context().run, self._push_one, payload, params, user)
        return await loop.run_in_executor(_push_threads(), call)

    def _push_one(self, payload: Any, params: Mapping[str, Any] | None, user: str | None) -> str:
        return self._app.backend.enqueue(self.spec, [self._job(payload, params, user)])[0]

    def push_many(
        self, payloads: Iterable[Any], *, params: Mapping[str, Any] | None = None, user: str | None = None
    ) -> list[str]:
        """Queue one job per item, batched. Nothing is queued if any payload fails to serialize."""
        jobs = [self._job(p, params, user) for p in payloads]
        if not jobs:
            return []
        return self._app.backend.enqueue(self.spec, jobs)

    def __call__(self, payload: Any, meta: Any = None) -> Any:
        """Call the handler directly, as a plain function (handy in unit tests)."""
        info = self.handler
        return info.func(payload, meta) if info.wants_meta else info.func(payload)

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}" for k, v in (("group", self._group_id), ("dedupe", self._dedupe_id)) if v is not None
        )
        return f"<Queue {self.name!r}{extra}>"
