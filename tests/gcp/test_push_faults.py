"""Pushes while Pub/Sub is unreachable, through a loopback proxy in front of the emulator: a push
that raised queues nothing later, says what happened, and a dedupe id still means one job."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from emulators import Emulator
from faults import FaultProxy

from queuerun import App, PushError
from queuerun.backends.gcp import GcpBackend, make_subscriber
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.errors import PushOutcomeUnknownError

pytestmark = pytest.mark.emulators


@pytest.fixture
def proxy(pubsub_emulator: Emulator) -> Iterator[FaultProxy]:
    p = FaultProxy(pubsub_emulator.host)
    yield p
    p.close()


def _counter(app: App, pubsub: Emulator) -> str:
    topology = ensure_topology(
        app, project=pubsub.project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub.host
    )
    subscriber = make_subscriber(emulator_host=pubsub.host)
    name = topology[0].subscription.replace("-sub", "-count")
    subscriber.create_subscription(request={"name": name, "topic": topology[0].topic})
    subscriber.close()
    return name


def _messages(pubsub: Emulator, subscription: str) -> list[str]:
    """Every message id on the subscription now (pulled and left unacknowledged: the count stays)."""
    subscriber = make_subscriber(emulator_host=pubsub.host)
    try:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=5)
        return sorted(m.message.message_id for m in response.received_messages)
    except Exception as exc:
        if type(exc).__name__ != "DeadlineExceeded":
            raise
        return []
    finally:
        subscriber.close()


def test_a_push_while_pubsub_refuses_connections_fails_fast_and_queues_nothing_later(
    new_app: Callable[[], App], gcp_settings: dict[str, str], pubsub_emulator: Emulator, proxy: FaultProxy
) -> None:
    # Given an app whose Pub/Sub goes through a proxy that refuses connections
    app = App(new_app().name, settings={**gcp_settings, "PUBSUB_EMULATOR_HOST": proxy.host})
    queue = app.queue("pay.fifo")(lambda job: None)
    counter = _counter(app, pubsub_emulator)
    proxy.set("refuse")
    try:
        # When a job is pushed
        started = time.monotonic()
        with pytest.raises(PushError) as caught:
            queue.group("g").dedupe("order-1").push({"n": 1})
        # Then the push raises soon, saying what happened
        assert time.monotonic() - started < 20
        assert "unavailable" in str(caught.value).lower() and "not queued" in str(caught.value)
        # And once Pub/Sub is back, nothing the failed push started reaches it; the caller's
        # retry with the same dedupe id queues the one job
        proxy.set("up")
        job_id = queue.group("g").dedupe("order-1").push({"n": 1})
        assert queue.group("g").dedupe("order-1").push({"n": 1}) == job_id
        assert isinstance(app.backend, GcpBackend)
        app.backend.stop()  # flushes anything still in the client: a late publish would show now
        assert _messages(pubsub_emulator, counter) == [job_id]
    finally:
        app.backend.stop()
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)


def test_a_push_that_gets_no_answer_says_the_job_may_be_queued_and_its_dedupe_id_queues_no_second_copy(
    new_app: Callable[[], App], gcp_settings: dict[str, str], pubsub_emulator: Emulator, proxy: FaultProxy
) -> None:
    # Given a Pub/Sub that accepts connections and never answers, and a short publish timeout
    app = App(new_app().name, settings={**gcp_settings, "PUBSUB_EMULATOR_HOST": proxy.host})
    queue = app.queue("pay.fifo")(lambda job: None)
    counter = _counter(app, pubsub_emulator)
    backend = GcpBackend.from_settings(app.settings, app_name=app.name)
    backend.publish_timeout = 2.0
    backend.bind(app)
    app.use_backend(backend)
    proxy.set("blackhole")
    try:
        # When a job is pushed, it raises the one error after which the job may still be queued
        with pytest.raises(PushOutcomeUnknownError, match="may or may not be queued"):
            queue.group("g").dedupe("order-2").push({"n": 2})
        # And a retry of the same dedupe id, once Pub/Sub answers again, risks no second copy
        proxy.set("up")
        with pytest.raises(PushOutcomeUnknownError, match="dedupe window ends"):
            queue.group("g").dedupe("order-2").push({"n": 2})
        # While the group itself is not blocked, and nothing of the failed push arrives later
        other = queue.group("g").dedupe("order-3").push({"n": 3})
        backend.stop()
        assert _messages(pubsub_emulator, counter) == [other]
    finally:
        backend.stop()
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)
