"""The Google Cloud backend: jobs are Pub/Sub messages, dedupe and completion records live in Firestore.

Publishing
    One ``google-cloud-pubsub`` publisher per backend, with batching and
    ``PublisherOptions(enable_message_ordering=True)``. FIFO jobs are published with
    ``ordering_key = group id``; standard jobs without one. The job id is the Pub/Sub message id,
    returned only once Pub/Sub has accepted the message. A failed publish pauses its ordering key in
    the client; we call ``resume_publish`` so one failure does not poison the group forever (the
    failed push raises, later pushes go through). A missing topic raises ``QueueNotFoundError``;
    any other failure ``PushError`` with the cause chained.

    Failure contract. Each attempt is one RPC with a deadline of ``publish_timeout`` (30 s) and no
    retry inside the client (with ordering on, the client would retry forever, publishing a job
    whose push had raised long ago; see :mod:`.publish_outcome`). Attempts that certainly queued
    nothing (Pub/Sub unreachable or UNAVAILABLE) are retried with ``google.api_core`` ``Retry`` for
    ``unavailable_deadline`` (10 s), then the push raises ``PushError`` "not queued": nothing of it
    is published later. An attempt that got no answer raises ``PushOutcomeUnknownError``: the only
    push error after which the job may be queued; its dedupe reservation is kept, not released.

Sequence numbers (``qr-seq``, FIFO only)
    A hybrid logical clock in the publishing process: ``seq = max(previous + 1, now in µs)``,
    taken under the same lock as the ``publish()`` call, so the order of numbers is the order the
    client hands messages of one ordering key to Pub/Sub, which is their delivery order. The number
    travels in an attribute, so a redelivery carries the same number. What is guaranteed:

    - within one process (any number of threads), the jobs of a group get strictly increasing
      numbers in delivery order, including jobs replayed from dead letters;
    - across processes, numbers follow the hosts' wall clocks: pushes to one group from different
      processes are increasing in delivery order when they are further apart than the clock skew
      between those hosts plus the publish latency; concurrent pushes to one group from different
      processes (which have no defined order anyway) may carry out-of-order numbers.

    No Firestore document is written per push of a group (Firestore sustains about one write per
    second per document, which a per-group counter would hit).

Dead letters, replay and drain
    ``dead_letters(queue)`` pulls the queue's dead-letter subscription without acknowledging, then
    releases what it pulled (a zero ack deadline), so listing is repeatable. ``replay(queue)``
    republishes those jobs to the queue's topic in their original order (queued time, then
    sequence number) and acknowledges the dead letters that were republished.
    ``drain()`` waits until every job published through this backend object (including jobs that
    handlers in this process pushed) has a completion record, which the push server writes when a
    job completes or is dead-lettered. Completion tracking is on for FIFO queues always and, with
    ``track_completions`` (the default under the emulators), for standard queues too; jobs pushed by
    other processes are not waited for.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..errors import DrainTimeoutError, JobError, PushError, PushOutcomeUnknownError, QueueNotFoundError, QueueRunError
from ..names import dead_letter_subscription_id, dead_letter_topic_id, topic_id
from ..spec import QueueSpec
from ..user_seal import admitted, require, sealed, user_seal
from ..wire import (
    A_CONTENT_TYPE,
    A_DEDUPE,
    A_GROUP,
    A_PARAM_PREFIX,
    A_QUEUED_AT,
    A_SEQUENCE,
    A_USER,
    MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES,
    MAX_MESSAGE_BYTES,
    OutgoingJob,
    ReceivedJob,
)
from .base import Backend, DeadLetter, Progress
from .firestore_store import CompletionStore, FirestoreDedupeStore
from .publish_outcome import Verdict, classify, describe

if TYPE_CHECKING:
    from ..app import App
    from ..settings import Settings

log = logging.getLogger("queuerun")

# Attributes the runtime adds to a dead letter it publishes itself.
A_JOB_ID: Final = "qr-job-id"  # the job's original id (a dead letter is a new message)
A_ERROR: Final = "qr-error"
A_ATTEMPTS: Final = "qr-attempts"
A_TRACE_PREFIX: Final = "qr-trace-"  # the failure's traceback, in chunks qr-trace-0, -1, ... (its last lines)
MAX_TRACE_CHUNKS: Final = 4  # 4 KiB of traceback: the innermost frames, which are the last ones
# Attributes Pub/Sub adds when its dead-letter policy forwards a message.
PUBSUB_DLQ_COUNT: Final = "CloudPubSubDeadLetterSourceDeliveryCount"

MAX_RECORDED_FAILURES: Final = 100  # what drain(fail_fast=True) can report, at most
REPLAY_CHUNK: Final = 500  # dead letters republished (and acknowledged) per step of a replay
DEFAULT_PUBLISH_TIMEOUT: Final = 30.0  # below DedupeStore.publish_timeout, so a stuck pusher's record is taken over
# How long a push keeps retrying while Pub/Sub is unreachable: a blip passes, an outage is reported soon.
DEFAULT_UNAVAILABLE_DEADLINE: Final = 10.0
PULL_BATCH: Final = 1000
# gRPC refuses responses over 4 MiB by default, and one Pub/Sub message may hold 10 MB: a pull must
# receive at least one whole message plus its attributes and framing (the emulator was measured to
# fill a pull response up to about 10 MB, whatever max_messages asks). Google's own default channel
# has no limit; this is for the channels we open to the emulator.
MAX_RECEIVE_BYTES: Final = MAX_MESSAGE_BYTES + 1024 * 1024
GRPC_OPTIONS: Final = (("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),)


class TopicNotFoundError(QueueNotFoundError):
    """The queue is declared but its Pub/Sub topic does not exist (not deployed, or wrong project)."""

    def __init__(self, queue: str, topic: str) -> None:
        self.queue = queue
        self.topic = topic
        QueueRunError.__init__(
            self,
            f"queue {queue!r}: Pub/Sub topic {topic} does not exist (deploy the app, or create the emulator "
            "topology with queuerun.emulator_topology)",
        )


class SequenceClock:
    """A hybrid logical clock in microseconds: strictly increasing in this process, close to wall time."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:  # callers hold the publish lock
        now = time.time_ns() // 1000
        self._last = now if now > self._last else self._last + 1
        return self._last


# -- clients -------------------------------------------------------------------------------
def make_publisher(*, emulator_host: str | None = None, endpoint: str | None = None, batch_settings: Any = None) -> Any:
    """A publisher with message ordering on; ``emulator_host`` (from settings) wins over os.environ."""
    from google.cloud.pubsub_v1 import PublisherClient
    from google.cloud.pubsub_v1.types import PublisherOptions

    kwargs: dict[str, Any] = {}
    if emulator_host:
        import grpc  # type: ignore[import-untyped]
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        kwargs["transport"] = PublisherGrpcTransport(channel=grpc.insecure_channel(emulator_host, options=GRPC_OPTIONS))
    elif endpoint:
        kwargs["client_options"] = {"api_endpoint": endpoint}
    return PublisherClient(
        batch_settings=batch_settings or (),
        publisher_options=PublisherOptions(enable_message_ordering=True),
        **kwargs,
    )


def make_subscriber(*, emulator_host: str | None = None, endpoint: str | None = None) -> Any:
    """A subscriber; ``endpoint`` is the locational one (``<region>-pubsub.googleapis.com:443``) if any."""
    from google.cloud.pubsub_v1 import SubscriberClient

    if emulator_host:
        import grpc
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

        channel = grpc.insecure_channel(emulator_host, options=GRPC_OPTIONS)
        return SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    if endpoint:
        return SubscriberClient(client_options={"api_endpoint": endpoint})
    return SubscriberClient()


def make_firestore(*, project: str, database: str = "(default)", emulator_host: str | None = None) -> Any:
    from google.cloud import firestore

    if not emulator_host:
        return firestore.Client(project=project, database=database)
    from google.auth.credentials import AnonymousCredentials

    client = firestore.Client(project=project, database=database, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    # The client reads FIRESTORE_EMULATOR_HOST from os.environ in __init__; settings come from an
    # injected mapping, so set the same attribute before the first call opens a channel.
    client._emulator_host = emulator_host
    return client


def _brief(text: str, limit: int = MAX_ATTRIBUTE_VALUE_BYTES) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def trace_attributes(trace: str, room: int) -> dict[str, str]:
    """A traceback as attributes of at most 1024 bytes each, in at most ``room`` of them, keeping its end."""
    data = trace.encode("utf-8")
    chunks = min(MAX_TRACE_CHUNKS, room)
    if chunks <= 0 or not data:
        return {}
    budget = chunks * MAX_ATTRIBUTE_VALUE_BYTES
    if len(data) > budget:
        data = data[len(data) - budget + 4 :]
        while data and data[0] & 0xC0 == 0x80:  # do not start inside a character
            data = data[1:]
        data = b"...\n" + data
    out: dict[str, str] = {}
    while data:
        cut = min(MAX_ATTRIBUTE_VALUE_BYTES, len(data))
        while cut < len(data) and data[cut] & 0xC0 == 0x80:
            cut -= 1
        out[f"{A_TRACE_PREFIX}{len(out)}"] = data[:cut].decode("utf-8")
        data = data[cut:]
    return out


def trace_from_attributes(attributes: Mapping[str, str]) -> str:
    parts: list[str] = []
    while f"{A_TRACE_PREFIX}{len(parts)}" in attributes:
        parts.append(attributes[f"{A_TRACE_PREFIX}{len(parts)}"])
    return "".join(parts)


class GcpBackend(Backend):
    """Pub/Sub topics per queue, Firestore for dedupe and completion records."""

    name = "gcp"
    external_delivery = True  # Pub/Sub delivers to the push server (or a pull worker)

    def __init__(
        self,
        *,
        project: str,
        app_name: str | None = None,
        pubsub_emulator_host: str | None = None,
        firestore_emulator_host: str | None = None,
        firestore_database: str = "(default)",
        pubsub_endpoint: str | None = None,
        track_completions: bool | None = None,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        unavailable_deadline: float = DEFAULT_UNAVAILABLE_DEADLINE,
        batch_settings: Any = None,
        publisher: Any = None,
        subscriber: Any = None,
        firestore: Any = None,
        user_key: str | None = None,
    ) -> None:
        """``user_key`` is ``QUEUERUN_USER_KEY``, which seals the user of each job (see :mod:`queuerun.user_seal`)."""
        self.project = project
        self.user_key = user_key
        self.app_name = app_name
        self._pubsub_emulator_host = pubsub_emulator_host
        self._firestore_emulator_host = firestore_emulator_host
        self._firestore_database = firestore_database
        self._pubsub_endpoint = pubsub_endpoint
        self.track_completions = bool(pubsub_emulator_host) if track_completions is None else track_completions
        self.publish_timeout = publish_timeout
        self.unavailable_deadline = unavailable_deadline
        self._batch_settings = batch_settings
        self._publisher = publisher
        self._subscriber = subscriber
        self._firestore = firestore
        self._clients_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._clock = SequenceClock()
        self.dedupe = FirestoreDedupeStore(lambda: self.firestore)
        self.completions = CompletionStore(lambda: self.firestore)
        self._outstanding: dict[tuple[str, str], str] = {}  # (topic, job id) -> queue, for drain
        self._outstanding_lock = threading.Lock()
        # Bounded: a long-running server records every failed attempt and nothing may grow with them.
        self._failures: collections.deque[BaseException] = collections.deque(maxlen=MAX_RECORDED_FAILURES)
        self._app: App | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, app_name: str | None = None) -> GcpBackend:
        if not settings.project:
            from ..errors import ConfigurationError

            raise ConfigurationError("the gcp backend needs GOOGLE_CLOUD_PROJECT")
        return cls(
            project=settings.project,
            app_name=app_name,
            pubsub_emulator_host=settings.pubsub_emulator_host,
            firestore_emulator_host=settings.firestore_emulator_host,
            firestore_database=settings.firestore_database,
            pubsub_endpoint=settings.pubsub_endpoint,
            user_key=settings.user_key,
        )

    # -- clients (created on first use: importing them costs cold-start time) ---------------
    @property
    def publisher(self) -> Any:
        with self._clients_lock:
            if self._publisher is None:
                self._publisher = make_publisher(
                    emulator_host=self._pubsub_emulator_host,
                    endpoint=self._pubsub_endpoint,
                    batch_settings=self._batch_settings,
                )
            return self._publisher

    @property
    def subscriber(self) -> Any:
        with self._clients_lock:
            if self._subscriber is None:
                self._subscriber = make_subscriber(
                    emulator_host=self._pubsub_emulator_host, endpoint=self._pubsub_endpoint
                )
            return self._subscriber

    @property
    def firestore(self) -> Any:
        with self._clients_lock:
            if self._firestore is None:
                self._firestore = make_firestore(
                    project=self.project, database=self._firestore_database, emulator_host=self._firestore_emulator_host
                )
            return self._firestore

    # -- names ------------------------------------------------------------------------------
    def bind(self, app: App) -> None:
        """Tie the backend to the app whose topics it publishes to (topic ids carry the app name)."""
        self._app = app
        self.app_name = app.name

    def _app_name(self) -> str:
        if self.app_name is None:
            raise QueueRunError("the gcp backend is not bound to an app: create it with app_name= or call bind(app)")
        return self.app_name

    def topic_path(self, queue: str) -> str:
        return f"projects/{self.project}/topics/{topic_id(self._app_name(), queue)}"

    def dead_letter_topic_path(self, queue: str) -> str:
        return f"projects/{self.project}/topics/{dead_letter_topic_id(self._app_name(), queue)}"

    def dead_letter_subscription_path(self, queue: str) -> str:
        return f"projects/{self.project}/subscriptions/{dead_letter_subscription_id(self._app_name(), queue)}"

    def dedupe_scope(self) -> tuple[str, str]:
        # One Firestore database may serve several apps and (through the emulator) projects.
        return self.project, self._app_name()

    def _spec(self, queue: str) -> QueueSpec:
        if self._app is not None:
            return self._app.spec(queue)
        return QueueSpec(name=queue)

    # -- push -------------------------------------------------------------------------------
    def _publish(self, spec: QueueSpec, jobs: Sequence[OutgoingJob]) -> list[str | BaseException]:
        topic = self.topic_path(spec.name)
        publisher = self.publisher
        deadline = time.monotonic() + self.unavailable_deadline
        sent: list[tuple[str, bytes, dict[str, str], Any]] = []
        seal = None
        if any(job.user is not None for job in jobs):  # refused before any job of the batch is sent
            seal = require(user_seal(self.user_key, self._app_name()), queue=spec.name)
        with self._publish_lock:  # numbers are taken in the order messages enter the client
            for job in jobs:
                key = job.group_id or "" if spec.fifo else ""
                attrs = sealed(
                    seal, job.attributes(self._clock.next() if spec.fifo else None), job.data, queue=spec.name
                )
                sent.append((key, job.data, attrs, self._send(publisher, topic, job.data, key, attrs)))

        results: list[str | BaseException] = []
        # In push order: a failed job of a group is retried before the group's later jobs (which
        # the client cancelled unsent when it failed), so they stay in order.
        for key, data, attrs, sending in sent:
            outcome = self._outcome(publisher, topic, key, sending)
            if isinstance(outcome, BaseException) and classify(outcome) is Verdict.RETRY:
                outcome = self._retry(publisher, topic, key, data, attrs, deadline, outcome)
            results.append(outcome if isinstance(outcome, str) else self._push_error(spec.name, topic, outcome))
        not_found = [r for r in results if isinstance(r, TopicNotFoundError)]
        if not_found:
            raise not_found[0]
        if self.track_completions:  # only drain() reads these: a server in production keeps none
            with self._outstanding_lock:
                for result in results:
                    if isinstance(result, str):
                        self._outstanding[(topic, result)] = spec.name
        return results

    def _send(self, publisher: Any, topic: str, data: bytes, key: str, attrs: Mapping[str, str]) -> Any:
        """Hand one message to the client: one RPC, no retry inside the client (see the module docstring)."""
        try:
            return publisher.publish(topic, data, ordering_key=key, retry=None, timeout=self.publish_timeout, **attrs)
        except Exception as exc:  # e.g. the client was stopped
            return exc

    def _outcome(self, publisher: Any, topic: str, key: str, sending: Any) -> str | BaseException:
        """The message id, or the error; a failure's paused ordering key is resumed."""
        if isinstance(sending, BaseException):
            return sending
        try:
            return str(sending.result(timeout=self.publish_timeout + 5))
        except Exception as exc:
            if key:
                with contextlib.suppress(RuntimeError, ValueError):  # another thread resumed it already
                    publisher.resume_publish(topic, key)
            return exc

    def _retry(
        self,
        publisher: Any,
        topic: str,
        key: str,
        data: bytes,
        attrs: Mapping[str, str],
        deadline: float,
        first: BaseException,
    ) -> str | BaseException:
        """Publish again while attempts certainly queue nothing, until ``deadline`` (monotonic)."""
        from google.api_core.exceptions import RetryError
        from google.api_core.retry import Retry

        def attempt() -> str:
            outcome = self._outcome(publisher, topic, key, self._send(publisher, topic, data, key, attrs))
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        left = deadline - time.monotonic()
        if left <= 0:
            return first
        retry = Retry(
            predicate=lambda exc: classify(exc) is Verdict.RETRY, initial=0.1, maximum=1.0, multiplier=2.0, timeout=left
        )
        try:
            return str(retry(attempt)())
        except RetryError as exc:
            return exc.cause if exc.cause is not None else exc
        except Exception as exc:
            return exc

    def _push_error(self, queue: str, topic: str, error: BaseException) -> BaseException:
        """The error a push raises for ``error``: it says whether the job may be queued."""
        from google.api_core.exceptions import NotFound

        if isinstance(error, NotFound):
            failure: BaseException = TopicNotFoundError(queue, topic)
        else:
            verdict = classify(error)
            where = self._pubsub_emulator_host or self._pubsub_endpoint or "pubsub.googleapis.com"
            if verdict is Verdict.UNKNOWN:
                failure = PushOutcomeUnknownError(
                    f"queue {queue!r}: Pub/Sub ({where}) did not confirm the job within {self.publish_timeout:g} s, "
                    f"so it may or may not be queued ({describe(error)}); pushing it again with the same dedupe id "
                    "does not queue a second copy"
                )
            elif verdict is Verdict.RETRY:
                failure = PushError(
                    f"queue {queue!r}: job not queued: Pub/Sub ({where}) is unavailable (tried for "
                    f"{self.unavailable_deadline:g} s): {describe(error)}"
                )
            else:
                failure = PushError(f"queue {queue!r}: job not queued: {describe(error)}")
        failure.__cause__ = error
        return failure

    def publish_dead_letter(
        self,
        queue: str,
        job_id: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        error: str,
        attempts: int,
        traceback: str = "",
    ) -> str:
        """Publish one job to the queue's dead-letter topic (the runtime's own dead-lettering)."""
        attrs = {
            k: v
            for k, v in attributes.items()
            if not k.startswith(("CloudPubSubDeadLetter", A_TRACE_PREFIX)) and k not in (A_JOB_ID, A_ERROR, A_ATTEMPTS)
        }
        attrs.update({A_JOB_ID: job_id, A_ERROR: _brief(error), A_ATTEMPTS: str(attempts)})
        attrs.update(trace_attributes(traceback, MAX_ATTRIBUTES - len(attrs)))
        topic = self.dead_letter_topic_path(queue)
        publisher = self.publisher
        deadline = time.monotonic() + self.unavailable_deadline
        outcome = self._outcome(publisher, topic, "", self._send(publisher, topic, data, "", attrs))
        if isinstance(outcome, BaseException) and classify(outcome) is Verdict.RETRY:
            outcome = self._retry(publisher, topic, "", data, attrs, deadline, outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    # -- consume side (queuerun.delivery) --------------------------------------------------------
    def dead_letter(self, spec: QueueSpec, job: ReceivedJob, *, error: str, traceback: str, attempts: int) -> None:
        self.publish_dead_letter(
            spec.name, job.job_id, job.data, job.attributes, error=error, attempts=attempts, traceback=traceback
        )

    def tracks_completions(self, spec: QueueSpec) -> bool:
        # Exactly-once (pull) queues too: a refused ack may be redelivered, and the record keeps the
        # handler from running again (cloud.google.com/pubsub/docs/exactly-once-delivery).
        return spec.fifo or spec.exactly_once or self.track_completions

    def completion_status(self, spec: QueueSpec, job_id: str) -> str | None:
        record = self.completions.get(self.topic_path(spec.name), job_id)
        return None if record is None else str(record.status)

    def record_completion(self, spec: QueueSpec, job_id: str, status: str, error: str) -> None:
        self.completions.mark(self.topic_path(spec.name), job_id, queue=spec.name, status=status, error=error)

    # -- operations ----------------------------------------------------------------------------
    def start(self, app: App) -> None:
        self.bind(app)

    def stop(self) -> None:
        publisher = self._publisher
        if publisher is not None:
            with contextlib.suppress(RuntimeError):  # already stopped
                publisher.stop()  # flushes batches still waiting for their latency window
            self._publisher = None

    def drain(self, timeout: float | None = None, *, fail_fast: bool = False) -> None:
        if not self.track_completions:
            raise QueueRunError(
                "drain() follows the jobs this backend pushed through completion records, which it keeps only "
                "with track_completions (on by default with the emulator): GcpBackend(track_completions=True)"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if fail_fast and self._failures:
                first = self._failures[0]
                self._failures.clear()
                raise first
            with self._outstanding_lock:
                pending = dict(self._outstanding)
            if pending:
                settled = self.completions.get_many(pending)
                with self._outstanding_lock:
                    for item in settled:
                        self._outstanding.pop(item, None)
                dead = [c for c in settled.values() if c.status == "dead"]
                if fail_fast and dead:
                    raise JobError(f"queue {dead[0].queue!r}: job {dead[0].job_id} was dead-lettered: {dead[0].error}")
                left = len(pending) - len(settled)
            else:
                left = 0
            if left == 0:
                self._failures.clear()
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise DrainTimeoutError(f"drain timed out after {timeout:g} s with {left} job(s) not settled")
            time.sleep(0.1)

    def _pull_dead(self, queue: str) -> list[Any]:
        """Every message waiting on the queue's dead-letter subscription, leased to us until released."""
        from google.api_core.exceptions import DeadlineExceeded, NotFound

        self._spec(queue)
        subscription = self.dead_letter_subscription_path(queue)
        received: list[Any] = []
        seen: set[str] = set()
        while True:
            try:
                with warnings.catch_warnings():
                    # Deprecated because it may return fewer messages than are waiting; we pull
                    # until a pull comes back empty, and a blocking pull would wait seconds on an
                    # empty subscription.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    response = self.subscriber.pull(
                        subscription=subscription, max_messages=PULL_BATCH, return_immediately=True, timeout=10
                    )
            except DeadlineExceeded:
                break
            except NotFound as exc:
                raise TopicNotFoundError(queue, subscription) from exc
            fresh = [m for m in response.received_messages if m.message.message_id not in seen]
            if not fresh:
                break
            for m in fresh:
                seen.add(m.message.message_id)
            received.extend(fresh)
        return received

    def _release(self, queue: str, messages: Sequence[Any]) -> None:
        if messages:
            self.subscriber.modify_ack_deadline(
                subscription=self.dead_letter_subscription_path(queue),
                ack_ids=[m.ack_id for m in messages],
                ack_deadline_seconds=0,
            )

    @staticmethod
    def _order(messages: list[Any]) -> list[Any]:
        def key(m: Any) -> tuple[str, int, float]:
            attrs = m.message.attributes
            seq = attrs.get(A_SEQUENCE, "")
            return (
                attrs.get(A_QUEUED_AT, ""),
                int(seq) if seq.isdigit() else 0,
                m.message.publish_time.timestamp(),
            )

        return sorted(messages, key=key)

    def _dead_letter(self, queue: str, m: Any) -> DeadLetter:
        attrs = dict(m.message.attributes)
        job_id = attrs.get(A_JOB_ID) or m.message.message_id
        received = ReceivedJob(job_id, bytes(m.message.data), attrs, 0, published_at=m.message.publish_time)
        attempts_raw = attrs.get(A_ATTEMPTS) or attrs.get(PUBSUB_DLQ_COUNT) or "0"
        error = attrs.get(A_ERROR) or (
            "delivery attempts exhausted (Pub/Sub dead-lettered it after "
            f"{attrs.get(PUBSUB_DLQ_COUNT, '?')} deliveries)"
        )
        attempts = int(attempts_raw) if attempts_raw.isdigit() else 0
        trace = trace_from_attributes(attrs)
        return DeadLetter.from_received(received, queue, attempts=attempts, error=error, traceback=trace)

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        messages = self._order(self._pull_dead(queue))
        try:
            return [self._dead_letter(queue, m) for m in messages]
        finally:
            self._release(queue, messages)

    def replay(self, queue: str, progress: Progress | None = None) -> list[str]:
        spec = self._spec(queue)
        messages = self._order(self._pull_dead(queue))
        if not messages:
            return []
        jobs = []
        seal = user_seal(self.user_key, self._app_name())
        for m in messages:
            attrs = {k: v for k, v in m.message.attributes.items() if not k.startswith("CloudPubSubDeadLetter")}
            # A dead letter keeps the attributes it was published with: its user is replayed only if sealed.
            attrs = dict(admitted(seal, attrs, bytes(m.message.data), queue=queue, job_id=m.message.message_id))
            queued_raw = attrs.get(A_QUEUED_AT)
            jobs.append(
                OutgoingJob(
                    queue=queue,
                    data=bytes(m.message.data),
                    content_type=attrs.get(A_CONTENT_TYPE, "application/json"),
                    queued_at=dt.datetime.fromisoformat(queued_raw) if queued_raw else m.message.publish_time,
                    group_id=attrs.get(A_GROUP),
                    dedupe_id=attrs.get(A_DEDUPE),
                    params={k[len(A_PARAM_PREFIX) :]: v for k, v in attrs.items() if k.startswith(A_PARAM_PREFIX)},
                    user=attrs.get(A_USER),
                )
            )
        results: list[str | BaseException] = []
        # In chunks, acknowledging each once republished, so a long replay reports progress and a
        # failure part-way leaves only the rest on the dead-letter subscription.
        for start in range(0, len(jobs), REPLAY_CHUNK):
            chunk = messages[start : start + REPLAY_CHUNK]
            try:
                published = self._publish(spec, jobs[start : start + REPLAY_CHUNK])
            except BaseException:
                self._release(queue, messages[start:])
                raise
            results += published
            done = [m for m, r in zip(chunk, published, strict=True) if isinstance(r, str)]
            failed = [m for m, r in zip(chunk, published, strict=True) if not isinstance(r, str)]
            if done:
                self.subscriber.acknowledge(
                    subscription=self.dead_letter_subscription_path(queue), ack_ids=[m.ack_id for m in done]
                )
            self._release(queue, failed)
            if progress is not None:
                progress(len(results), len(jobs))
        errors = [r for r in results if not isinstance(r, str)]
        if errors:
            from ..errors import PushError

            raise PushError(
                f"queue {queue!r}: {len(errors)} of {len(jobs)} dead letters were not replayed: {errors[0]}"
            )
        return [r for r in results if isinstance(r, str)]
