"""Every error queuerun raises, under one root.

    QueueRunError
    ├── ConfigurationError        bad app/queue names, out-of-range options, bad settings
    │   └── AuthenticationHookError  the authenticate hook returned a non-string (a server error, 500)
    ├── QueueNotFoundError        no queue declared under that name (also a LookupError)
    ├── PushError                 the job could not be queued; the cause is chained
    │   ├── PushOutcomeUnknownError  Pub/Sub did not answer in time: the job may be queued
    │   ├── GroupIdRequiredError  FIFO push without a group id
    │   └── PayloadError          payload not serializable, or over Pub/Sub's limits
    │       └── PayloadTooLargeError  over Pub/Sub's 10 MB message limit
    ├── JobError                  raised inside a worker, about one job
    │   ├── JobTimeoutError       the handler ran past the queue's timeout
    │   ├── PayloadValidationError  payload does not fit the handler's typed parameter
    │   │                            (raised by push; on delivery never retried: straight to dead letters)
    │   ├── UndecodableJobError   a delivered message cannot become a job at all
    │   │                            (never retried: dead-lettered at once, with the reason)
    │   └── Reject                raised by a handler: dead-letter this job now, no retry (.reason)
    ├── DrainTimeoutError         local.drain() gave up with jobs still pending
    ├── PushAuthError             a Pub/Sub push request failed OIDC verification
    │                                (.status: 401 bad token, 403 wrong caller, 503 certs unavailable)
    ├── EnvelopeError             a Pub/Sub push body is not a valid envelope (.status: 400, or 413 too large)
    ├── RequestRejected           an HTTP request to a queue endpoint cannot be queued
    │                                (.status: 400, 404, 405, 413, 415 or 422; 503 when a check cannot run now)
    ├── AuthenticationError       raised by an App's authenticate hook (.status: 401, or 403)
    └── BuildError                a source deploy's Cloud Build build failed (queuerun_gcp; names the build)

Messages name the queue, the field and the offending value.
"""

from __future__ import annotations

from collections.abc import Sequence


class QueueRunError(Exception):
    """Root of every queuerun error."""


class ConfigurationError(QueueRunError, ValueError):
    """An app, queue or setting is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("; ".join(self.problems))


class QueueNotFoundError(QueueRunError, LookupError):
    """No queue is declared under that name."""

    def __init__(self, queue: str, known: Sequence[str] = ()) -> None:
        self.queue = queue
        hint = f" (declared: {', '.join(sorted(known))})" if known else " (no queues declared)"
        super().__init__(f"no queue named {queue!r}{hint}")

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a key
        return str(self.args[0])


class PushError(QueueRunError):
    """The job was not queued. ``__cause__`` holds the backend's error, if any."""


class PushOutcomeUnknownError(PushError):
    """A publish request went out and no answer came in time: the job may or may not be queued.

    The only :class:`PushError` after which the job can still run. Nothing is retried behind the
    caller's back; pushing again with the same dedupe id does not queue a second copy while the
    first push's reservation stands (see :mod:`queuerun.dedupe`).
    """


class GroupIdRequiredError(PushError, ValueError):
    """A FIFO queue was pushed to without ``group(id)``."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"queue {queue!r} is FIFO: call .group(id) before push (group_id is None)")


class PayloadError(PushError, ValueError):
    """The payload cannot be serialized, or breaks a size limit."""


class PayloadTooLargeError(PayloadError):
    """The serialized job is over Pub/Sub's 10 MB message limit."""


class JobError(QueueRunError):
    """Something about one job, raised while running it."""


class JobTimeoutError(JobError, TimeoutError):
    """The handler did not finish within the queue's timeout."""


class PayloadValidationError(JobError, ValueError):
    """The payload does not match the handler's annotated type: raised by ``push`` (nothing is queued),
    and on delivery of a message another producer published (not retried). Names fields and types, never values."""


class UndecodableJobError(JobError, ValueError):
    """A delivered message cannot become a job (bad payload or attributes). Not retried: its bytes never change."""


class Reject(JobError):
    """Raise from a handler to dead-letter the job at once, without retrying it, on every backend.

    ``raise Reject("card declined")``: for jobs that can never succeed (retrying would only repeat
    the failure). The reason is the dead letter's error; the job can still be replayed from there.
    """

    def __init__(self, reason: str = "rejected by the handler") -> None:
        self.reason = reason
        super().__init__(reason)


class DrainTimeoutError(QueueRunError, TimeoutError):
    """``drain()`` ran out of time while jobs were still pending or running."""


class PushAuthError(QueueRunError):
    """A Pub/Sub push request failed OIDC verification; ``status`` is the HTTP status to answer.

    The message (for logs) may name the expected audience and service account; ``public`` is what the
    caller is told, which names neither.
    """

    def __init__(self, status: int, message: str, *, public: str | None = None) -> None:
        self.status = status
        self._public = public
        super().__init__(message)

    @property
    def public(self) -> str:
        """The message without what the server expected (``..., expected X`` is cut off)."""
        if self._public is not None:
            return self._public
        return str(self).split(", expected", 1)[0]


class EnvelopeError(QueueRunError):
    """A Pub/Sub push body is not a valid wrapped envelope; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class RequestRejected(QueueRunError):
    """An HTTP request to a queue endpoint cannot become a job; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class AuthenticationError(QueueRunError):
    """Raise from an ``authenticate`` hook to reject a request: 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, message: str = "authentication required", *, status: int = 401) -> None:
        if status not in (401, 403):
            raise ValueError(f"AuthenticationError status must be 401 or 403, got {status!r}")
        self.status = status
        super().__init__(message)


class AuthenticationHookError(ConfigurationError):
    """An App's ``authenticate`` hook returned something other than a user id string or None.

    A fault of the app, not of the request: the server answers 500 and tells the caller nothing more.
    """


class BuildError(QueueRunError):
    """Cloud Build could not build a source deploy's image: the message names the build, status and logs."""
