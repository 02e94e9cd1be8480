"""A copy of every job, so ``queuerun dev --emulators`` loses none of them to the emulator's drops.

The Pub/Sub emulator drops push messages after failed deliveries, and messages it could not push
while the push server was down (production Pub/Sub redelivers them until retention ends; see
:mod:`queuerun.server.redelivery`). Pull subscriptions keep every message until acknowledged. So
each queue gets a second subscription on its topic, the ledger (``<subscription>-ledger``, pull,
leases of ``lease`` seconds, 60 by default, renewed at half-time), which receives a copy of every
job published once it exists. The dev server holds each copy until the job has a completion
record (done or dead-lettered; the push server writes one for every job under the emulators), then
acknowledges it.

A job with no delivery running and none within the grace (:meth:`RedeliveryWatch.claim`) is
delivered by the dev server itself: it posts the same push envelope (message id, data,
attributes, publish time, so the same job id and metadata, and the attempt count goes on) to its
own push endpoint, marked with the watch's token. On a FIFO queue only the group's oldest unsettled
job (by ``qr-seq``) can be claimed, so the group keeps its order. Copies held when the dev server
stops (or is killed) are leased to nobody one lease later, and the next dev server takes them up.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .emulator_topology import push_endpoint
from .names import subscription_id, topic_id
from .server.redelivery import REDELIVERY_HEADER, RedeliveryWatch
from .wire import A_GROUP, A_SEQUENCE

if TYPE_CHECKING:
    from .app import App
    from .backends.gcp import GcpBackend
    from .spec import QueueSpec

log = logging.getLogger("queuerun.dev")

LEDGER_SUFFIX: Final = "-ledger"
# How long a held copy stays leased without renewal: after a crash, the next dev server sees it again
# that much later (10-600 s, Pub/Sub's ack deadline range). Renewed when half of it is gone.
DEFAULT_LEASE: Final = 60
PULL_BATCH: Final = 1000
SETTLE_BATCH: Final = 500  # completion records read per pass, least recently checked first


def ledger_subscription(project: str, app_name: str, queue: str) -> str:
    return f"projects/{project}/subscriptions/{subscription_id(app_name, queue)}{LEDGER_SUFFIX}"


def _pushed(app: App) -> list[QueueSpec]:
    """The queues a ledger covers: push queues only (the emulator loses pushes; a pull subscription keeps
    every message until acknowledged, and the pull worker, not the dev server, delivers those)."""
    return [spec for spec in app.specs if spec.delivery == "push"]


def ensure_ledgers(app: App, *, project: str, emulator_host: str, lease: int = DEFAULT_LEASE) -> None:
    """Create each queue's ledger subscription (kept if it exists). Call before jobs are pushed."""
    from google.api_core.exceptions import AlreadyExists

    from .backends.gcp import make_subscriber

    subscriber = make_subscriber(emulator_host=emulator_host)
    try:
        for spec in _pushed(app):
            with contextlib.suppress(AlreadyExists):
                subscriber.create_subscription(
                    request={
                        "name": ledger_subscription(project, app.name, spec.name),
                        "topic": f"projects/{project}/topics/{topic_id(app.name, spec.name)}",
                        "ack_deadline_seconds": lease,
                        "expiration_policy": {},  # never expire
                    }
                )
    finally:
        subscriber.close()


def delete_ledgers(app: App, *, project: str, emulator_host: str) -> None:
    """Remove what :func:`ensure_ledgers` created (missing subscriptions are skipped)."""
    from google.api_core.exceptions import NotFound

    from .backends.gcp import make_subscriber

    subscriber = make_subscriber(emulator_host=emulator_host)
    try:
        for spec in _pushed(app):
            with contextlib.suppress(NotFound):
                subscriber.delete_subscription(subscription=ledger_subscription(project, app.name, spec.name))
    finally:
        subscriber.close()


@dataclass
class _Held:
    queue: str
    message: Any  # PubsubMessage
    ack_id: str
    first_seen: float
    leased_at: float
    checked_at: float = float("-inf")

    @property
    def group(self) -> str | None:
        group = self.message.attributes.get(A_GROUP)
        return None if group is None else str(group)

    @property
    def sequence(self) -> int:
        raw = self.message.attributes.get(A_SEQUENCE, "")
        return int(raw) if raw.isdigit() else 0


@dataclass(frozen=True)
class Recovery:
    """A job the dev server delivered itself, and how its delivery was answered (0: not at all)."""

    queue: str
    job_id: str
    attempt: int  # of its last nacked delivery; 0 if it was never delivered
    status: int


class Ledger:
    """Holds the ledger copies and delivers what the emulator dropped. ``step()`` is one pass;
    ``start()`` runs it every ``poll`` seconds in a thread until ``stop()``."""

    def __init__(
        self,
        app: App,
        watch: RedeliveryWatch,
        push_url: str,
        *,
        project: str,
        emulator_host: str,
        poll: float = 1.0,
        workers: int = 4,
        lease: int = DEFAULT_LEASE,
        on_recovery: Callable[[Recovery], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from .backends.gcp import make_subscriber

        self.app, self.watch, self.push_url = app, watch, push_url.rstrip("/")
        self.project, self.poll, self.lease = project, poll, lease
        self.on_recovery = on_recovery
        self._clock = clock
        self._subscriber = make_subscriber(emulator_host=emulator_host)
        self._held: dict[tuple[str, str], _Held] = {}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="queuerun-ledger")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="queuerun-ledger", daemon=True)

    @property
    def backend(self) -> GcpBackend:
        from .backends.gcp import GcpBackend

        backend = self.app.backend
        assert isinstance(backend, GcpBackend)
        return backend

    def start(self) -> Ledger:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._subscriber.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.step()
            except Exception:  # the emulator or Firestore failed this pass: the next one tries again
                log.exception("the dev server's ledger pass failed")

    # -- one pass -------------------------------------------------------------------------------
    def step(self) -> int:
        """Pull new copies, let go of settled jobs, renew leases, claim due jobs. Returns how many were claimed."""
        now = self._clock()
        specs = {spec.name: spec for spec in _pushed(self.app)}
        for queue in specs:
            self._pull(queue, now)
        self._settle(now)
        self._extend(now)
        claimed = 0
        for held in self._candidates(specs):
            spec = specs[held.queue]
            attempt = self.watch.claim(
                held.queue, held.message.message_id, first_seen=held.first_seen, backoff=spec.backoff
            )
            if attempt is not None:
                claimed += 1
                self._pool.submit(self._deliver, spec, held, attempt)
        return claimed

    def _pull(self, queue: str, now: float) -> None:
        from google.api_core.exceptions import DeadlineExceeded

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # return_immediately: never block a pass
                response = self._subscriber.pull(
                    subscription=ledger_subscription(self.project, self.app.name, queue),
                    max_messages=PULL_BATCH,
                    return_immediately=True,
                    timeout=10,
                )
        except DeadlineExceeded:  # nothing to pull
            return
        for received in response.received_messages:
            key = (queue, received.message.message_id)
            before = self._held.get(key)
            first_seen = before.first_seen if before is not None else now
            self._held[key] = _Held(queue, received.message, received.ack_id, first_seen, now)

    def _settle(self, now: float) -> None:
        """Acknowledge the copies of jobs that have a completion record (a bounded batch per pass)."""
        batch = sorted(self._held.values(), key=lambda h: h.checked_at)[:SETTLE_BATCH]
        if not batch:
            return
        topics = {queue: self.backend.topic_path(queue) for queue in {h.queue for h in batch}}
        records = self.backend.completions.get_many((topics[h.queue], h.message.message_id) for h in batch)
        done: dict[str, list[str]] = {}
        for held in batch:
            held.checked_at = now
            job_id = held.message.message_id
            if (topics[held.queue], job_id) in records:
                done.setdefault(held.queue, []).append(held.ack_id)
                del self._held[(held.queue, job_id)]
                self.watch.settled(held.queue, job_id)
        for queue, ack_ids in done.items():
            self._subscriber.acknowledge(
                subscription=ledger_subscription(self.project, self.app.name, queue), ack_ids=ack_ids
            )

    def _extend(self, now: float) -> None:
        stale: dict[str, list[_Held]] = {}
        for held in self._held.values():
            if now - held.leased_at >= self.lease / 2:
                stale.setdefault(held.queue, []).append(held)
        for queue, items in stale.items():
            self._subscriber.modify_ack_deadline(
                subscription=ledger_subscription(self.project, self.app.name, queue),
                ack_ids=[h.ack_id for h in items],
                ack_deadline_seconds=self.lease,
            )
            for held in items:
                held.leased_at = now

    def _candidates(self, specs: dict[str, QueueSpec]) -> list[_Held]:
        """Unsettled jobs that may be claimed: all of a standard queue, a FIFO group's oldest only."""
        heads: dict[tuple[str, str | None], _Held] = {}
        out: list[_Held] = []
        for held in self._held.values():
            if not specs[held.queue].fifo:
                out.append(held)
                continue
            key = (held.queue, held.group)
            if key not in heads or held.sequence < heads[key].sequence:
                heads[key] = held
        return out + list(heads.values())

    # -- one delivery of the dev server's own ---------------------------------------------------
    def _deliver(self, spec: QueueSpec, held: _Held, attempt: int) -> None:
        job_id = held.message.message_id
        try:
            # Claimed: nothing else runs it now. Its record is the last word (a delivery may have
            # completed it between this pass's check and the claim).
            if self.backend.completions.get(self.backend.topic_path(spec.name), job_id) is not None:
                return
            status = self._post(spec, held)
        except Exception:  # Firestore failed: the job stays claimed and unsettled, a later pass tries again
            log.exception("the dev server could not deliver job %s of queue %r itself", job_id, spec.name)
            return
        finally:
            self.watch.released(spec.name, job_id)
        if self.on_recovery is not None:
            self.on_recovery(Recovery(spec.name, job_id, attempt, status))

    def _post(self, spec: QueueSpec, held: _Held) -> int:
        message = held.message
        body = {
            "message": {
                "data": base64.b64encode(bytes(message.data)).decode(),
                "attributes": dict(message.attributes),
                "messageId": message.message_id,
                "publishTime": _rfc3339(message.publish_time),
            },
            "subscription": f"projects/{self.project}/subscriptions/{subscription_id(self.app.name, spec.name)}",
        }
        request = urllib.request.Request(
            push_endpoint(self.push_url, spec.name),
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", REDELIVERY_HEADER: self.watch.token},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=spec.ack_deadline + 30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0  # the server is stopping: the next dev server delivers it


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
