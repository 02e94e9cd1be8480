"""The backend seam: push logic (dedupe, batching, error mapping) above, a publish primitive below.

Each backend supplies ``_publish`` and a :class:`~queuerun.dedupe.DedupeStore`, plus the local
operations a developer or test needs (start workers, drain, dead letters, replay). On the consume
side, :class:`~queuerun.delivery.DeliveryCore` runs deliveries against the primitives here
(``dead_letter``, completion records, ``record_failure``), whatever transport delivered them.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..dedupe import DedupeStore, Reservation, dedupe_key
from ..errors import PushError, PushOutcomeUnknownError, QueueRunError, UndecodableJobError
from ..spec import QueueSpec
from ..wire import OutgoingJob, ReceivedJob

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("queuerun")


@dataclass(frozen=True)
class DeadLetter:
    """A job that exhausted its attempts (or failed validation), kept for inspection and replay."""

    job_id: str
    queue: str
    payload: Any
    group_id: str | None
    attempts: int
    error: str
    queued_at: dt.datetime
    params: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    undecodable: str = ""  # why the message could not be decoded (payload is then its raw bytes)
    traceback: str = ""  # the failure's traceback, when one was captured (its last lines on Google Cloud)

    @classmethod
    def from_received(
        cls, received: ReceivedJob, queue: str, *, attempts: int, error: str, traceback: str = ""
    ) -> DeadLetter:
        """List a dead letter whatever it holds: one that cannot be decoded is shown raw, with the reason."""
        try:
            payload, meta = received.decode(queue, fifo=False)
        except UndecodableJobError as exc:
            return cls(
                job_id=received.job_id,
                queue=queue,
                payload=bytes(received.data),
                group_id=received.group_id,
                attempts=attempts,
                error=error,
                queued_at=received.published_at or dt.datetime.fromtimestamp(0, dt.UTC),
                undecodable=str(exc),
                traceback=traceback,
            )
        return cls(
            job_id=received.job_id,
            queue=queue,
            payload=payload,
            group_id=received.group_id,
            attempts=attempts,
            error=error,
            queued_at=meta.queued_at,
            params=meta.params,
            user=meta.user,
            traceback=traceback,
        )


Progress = Callable[[int, int], None]  # (done, total): called as a long operation advances


class PushBatchError(PushError):
    """Some jobs of a push_many were not queued. ``job_ids`` has None where a job failed."""

    def __init__(self, message: str, job_ids: Sequence[str | None]) -> None:
        super().__init__(message)
        self.job_ids = list(job_ids)


MAX_RECORDED_FAILURES = 100  # what drain(fail_fast=True) can report, at most


class Backend(ABC):
    """Where jobs are queued. Logic lives here; implementations provide the primitives."""

    name: str = "backend"
    dedupe: DedupeStore
    # Jobs reach this process from outside (Pub/Sub push or pull), not from a worker of the backend's own.
    external_delivery: bool = False
    # The consume-side primitives are fast and local: the delivery core calls them on its event loop.
    inline_io: bool = False
    _failures: collections.deque[BaseException]

    # -- primitive ------------------------------------------------------------------------
    @abstractmethod
    def _publish(self, spec: QueueSpec, jobs: Sequence[OutgoingJob]) -> list[str | BaseException]:
        """Durably queue ``jobs`` in order; one job id (or the error) per job."""

    def dedupe_scope(self) -> tuple[str, str]:
        """(project, app) that dedupe keys are scoped to, where several apps may share one store.

        Empty here: the embedded backend's store holds one app's jobs. A backend whose store is
        shared (Firestore) overrides it.
        """
        return "", ""

    # -- logic ----------------------------------------------------------------------------
    def enqueue(self, spec: QueueSpec, jobs: Sequence[OutgoingJob]) -> list[str]:
        """Queue jobs, honouring dedupe. Returns one id per job; a duplicate gets the first job's id."""
        results: list[str | None] = [None] * len(jobs)
        owned: dict[int, Reservation] = {}
        first_in_batch: dict[str, int] = {}
        copies: dict[int, int] = {}
        project, app = self.dedupe_scope()
        for i, job in enumerate(jobs):
            if job.dedupe_id is None:
                continue
            key = dedupe_key(spec.name, job.group_id, job.dedupe_id, app=app, project=project)
            if key in first_in_batch:
                copies[i] = first_in_batch[key]
                continue
            first_in_batch[key] = i
            try:
                reservation = self.dedupe.reserve(key, spec.dedupe_window)
            except QueueRunError:
                self._release_all(owned.values())
                raise
            except Exception as exc:
                self._release_all(owned.values())
                raise PushError(f"queue {spec.name!r}: dedupe store failed: {exc}") from exc
            if reservation.job_id is not None:
                results[i] = reservation.job_id
            else:
                owned[i] = reservation

        to_publish = [i for i in range(len(jobs)) if results[i] is None and i not in copies]
        try:
            published = self._publish(spec, [jobs[i] for i in to_publish]) if to_publish else []
        except QueueRunError:
            self._release_all(owned.values())
            raise
        except Exception as exc:
            self._release_all(owned.values())
            raise PushError(f"queue {spec.name!r}: could not queue the job: {exc}") from exc

        errors: list[BaseException] = []
        for i, outcome in zip(to_publish, published, strict=True):
            held = owned.get(i)
            if isinstance(outcome, BaseException):
                errors.append(outcome)
                if held is None:
                    continue
                if isinstance(outcome, PushOutcomeUnknownError):
                    # The job may be queued: releasing would let a retry of the same dedupe id
                    # queue a second copy. If even the mark fails, the pending record stays.
                    try:
                        self.dedupe.mark_unknown(held)
                    except Exception:
                        log.warning("queue %s: dedupe key of an unknown push outcome not marked", spec.name)
                else:
                    self.dedupe.release(held)
                continue
            results[i] = outcome
            if held is not None:
                try:
                    self.dedupe.confirm(held, outcome)
                except Exception:  # the job is queued, so its id stands; a duplicate push waits for the take-over
                    log.warning("queue %s: job %s queued, but its dedupe record was not confirmed", spec.name, outcome)
        for i, first in copies.items():
            results[i] = results[first]

        if errors:
            first_error = errors[0]
            if len(jobs) == 1:
                if isinstance(first_error, PushError):
                    raise first_error
                raise PushError(f"queue {spec.name!r}: could not queue the job: {first_error}") from first_error
            raise PushBatchError(
                f"queue {spec.name!r}: {len(errors)} of {len(jobs)} jobs were not queued: {first_error}",
                results,
            ) from first_error
        return [r for r in results if r is not None]

    def _release_all(self, reservations: Any) -> None:
        for reservation in reservations:
            self.dedupe.release(reservation)

    # -- consume side (see queuerun.delivery) -------------------------------------------------
    @abstractmethod
    def dead_letter(self, spec: QueueSpec, job: ReceivedJob, *, error: str, traceback: str, attempts: int) -> None:
        """Move ``job`` to ``spec``'s dead letters with its error and traceback; raises if that failed."""

    def tracks_completions(self, spec: QueueSpec) -> bool:
        """Whether completion records are kept for ``spec``'s jobs (none here)."""
        return False

    def completion_status(self, spec: QueueSpec, job_id: str) -> str | None:
        """"done" or "dead" when the job has completed before, else None."""
        return None

    def record_completion(self, spec: QueueSpec, job_id: str, status: str, error: str) -> None:  # noqa: B027
        """Record that the job is done or dead (where :meth:`tracks_completions`)."""

    def record_failure(self, error: BaseException) -> None:
        """Keep a failed attempt's error, so ``drain(fail_fast=True)`` raises it."""
        failures = self.__dict__.get("_failures")
        if failures is None:
            failures = self._failures = collections.deque(maxlen=MAX_RECORDED_FAILURES)
        failures.append(error)

    def _raise_first_failure(self) -> None:
        failures = self.__dict__.get("_failures")
        if failures:
            first = failures[0]
            failures.clear()
            raise first

    def _clear_failures(self) -> None:
        failures = self.__dict__.get("_failures")
        if failures:
            failures.clear()

    # -- operations -------------------------------------------------------------------------
    def start(self, app: App) -> None:  # noqa: B027  (optional hook, deliberately not abstract)
        """Begin processing this app's jobs (embedded workers); a no-op where the cloud delivers."""

    def stop(self) -> None:  # noqa: B027  (optional hook, deliberately not abstract)
        """Stop processing and release resources."""

    @abstractmethod
    def drain(self, timeout: float | None = None, *, fail_fast: bool = False) -> None:
        """Return once no job is pending or running; raise DrainTimeoutError after ``timeout``."""

    @abstractmethod
    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """Jobs of ``queue`` that exhausted their attempts, oldest first."""

    @abstractmethod
    def replay(self, queue: str, progress: Progress | None = None) -> list[str]:
        """Queue every dead letter of ``queue`` again, in their original order; returns the queued jobs' ids
        (the embedded backend keeps each job's id; Pub/Sub gives republished jobs new ones)."""
