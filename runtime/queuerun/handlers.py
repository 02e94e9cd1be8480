"""Handler introspection and invocation: typed payloads, sync/async, timeouts, the signal.

Shared by the embedded workers and the push server, so a job runs the same way everywhere.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import time
import typing
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

from .context import JobContext, job_context
from .errors import JobTimeoutError, PayloadValidationError, Reject
from .metadata import JobMetadata

Handler = Callable[..., Any]


@dataclass(frozen=True)
class HandlerInfo:
    func: Handler
    is_async: bool
    wants_meta: bool
    payload_type: Any  # a dataclass or pydantic model class, or None for untyped


def _is_typed_payload(annotation: Any) -> bool:
    if not isinstance(annotation, type):
        return False
    return dataclasses.is_dataclass(annotation) or hasattr(annotation, "model_validate")


def inspect_handler(func: Handler, *, queue: str) -> HandlerInfo:
    """Read what a handler takes: (payload) or (payload, meta), and the payload's annotated type."""
    from .errors import ConfigurationError

    if not callable(func):
        raise ConfigurationError(f"queue {queue!r}: handler must be callable, got {func!r}")
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"queue {queue!r}: cannot read the handler's signature: {exc}") from exc
    positional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    has_varargs = any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
    if not positional and not has_varargs:
        raise ConfigurationError(f"queue {queue!r}: handler {func.__name__} must take the payload as first parameter")
    payload_type: Any = None
    if positional:
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable forward refs: treat the payload as untyped
            hints = {}
        annotation = hints.get(positional[0].name)
        if _is_typed_payload(annotation):
            payload_type = annotation
    return HandlerInfo(
        func=func,
        is_async=inspect.iscoroutinefunction(func),
        wants_meta=len(positional) >= 2 or has_varargs,
        payload_type=payload_type,
    )


@functools.lru_cache(maxsize=256)
def _adapter(payload_type: Any) -> Any:
    """One pydantic TypeAdapter per type: building one costs more than validating (push validates too)."""
    from pydantic import TypeAdapter

    return TypeAdapter(payload_type)


def convert_payload(info: HandlerInfo, payload: Any, *, queue: str) -> Any:
    """Validate and convert to the handler's typed parameter. Raises PayloadValidationError."""
    if info.payload_type is None:
        return payload
    from pydantic import ValidationError

    try:
        return _adapter(info.payload_type).validate_python(payload)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "(payload)"
            # The type of what came, never the value: this message reaches logs and dead-letter
            # attributes, and a payload may hold a card number.
            problems.append(f"field {where!r}: {err.get('msg')} (got {type(err.get('input')).__name__})")
        raise PayloadValidationError(
            f"queue {queue!r}: payload does not match {info.payload_type.__name__}: " + "; ".join(problems)
        ) from None


Status = Literal["done", "retry", "dead"]


@dataclass(frozen=True)
class Outcome:
    status: Status
    error: BaseException | None
    duration: float


async def run_handler(
    info: HandlerInfo,
    payload: Any,
    meta: JobMetadata,
    *,
    ctx: JobContext,
    timeout: float,
    executor: Executor | None,
    linger: float | None = 0.0,
    on_done: Callable[[], None] | None = None,
) -> Outcome:
    """Run one job; never raises. A timeout sets the signal and cancels async handlers.

    A sync handler's thread cannot be stopped. ``linger`` is how long to wait for it after a timeout
    before reporting (None: until it returns), so a FIFO group never has two of its jobs running.

    ``on_done`` (which must not raise) is called the moment the handler returns without error
    before its timeout: in the handler's own thread for a sync handler, before the event loop hears
    of it (a sync handler returning after its timeout has failed: the signal told it to stop). The
    push server writes the completion record there, so the window in which a crash makes a
    completed job run again is that one write.
    """
    start = time.monotonic()

    def timed_out() -> Outcome:
        meta.signal.abort("timeout")
        err = JobTimeoutError(f"queue {meta.queue_name!r}: job {meta.job_id} timed out after {timeout:g} s")
        return Outcome("retry", err, time.monotonic() - start)

    try:
        value = convert_payload(info, payload, queue=meta.queue_name)
        args = (value, meta) if info.wants_meta else (value,)
        with job_context(ctx):
            if info.is_async:
                limit = asyncio.timeout(timeout)
                try:
                    async with limit:
                        await info.func(*args)
                except TimeoutError:
                    if limit.expired():
                        return timed_out()
                    raise  # the handler's own TimeoutError: an ordinary failure
                if on_done is not None:
                    await asyncio.get_running_loop().run_in_executor(executor, on_done)
            else:
                # The context copy carries app and user into the worker thread.
                call = functools.partial(contextvars.copy_context().run, _then, info.func, args, meta, on_done)
                future = asyncio.get_running_loop().run_in_executor(executor, call)
                done, _ = await asyncio.wait({future}, timeout=timeout)
                if not done:
                    outcome = timed_out()
                    if linger is None or linger > 0:
                        await asyncio.wait({future}, timeout=linger)
                    future.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved"
                    return outcome
                future.result()
    except (PayloadValidationError, Reject) as exc:  # retrying cannot help: dead-letter now
        return Outcome("dead", exc, time.monotonic() - start)
    except Exception as exc:
        return Outcome("retry", exc, time.monotonic() - start)
    return Outcome("done", None, time.monotonic() - start)


def _then(func: Handler, args: tuple[Any, ...], meta: JobMetadata, on_done: Callable[[], None] | None) -> None:
    """Call a sync handler, then ``on_done`` in the same thread unless the job timed out meanwhile."""
    func(*args)
    if on_done is not None and not meta.signal.aborted:
        on_done()
