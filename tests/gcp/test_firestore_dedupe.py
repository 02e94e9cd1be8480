"""Dedupe and completion records on the Firestore emulator, and pushes through the real publisher."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from emulators import Emulator

from queuerun import App, QueueNotFoundError
from queuerun.backends.firestore_store import CompletionStore, FirestoreDedupeStore
from queuerun.backends.gcp import GcpBackend, make_firestore, make_subscriber
from queuerun.dedupe import DedupeRecord, dedupe_key
from queuerun.emulator_topology import delete_topology, ensure_topology

pytestmark = pytest.mark.emulators


@pytest.fixture
def store(clean_firestore: Emulator) -> FirestoreDedupeStore:
    client = make_firestore(project=clean_firestore.project, emulator_host=clean_firestore.host)
    return FirestoreDedupeStore(lambda: client)


def _backend(app: App) -> GcpBackend:
    backend = app.backend
    assert isinstance(backend, GcpBackend)
    return backend


def _count_messages(pubsub: Emulator, subscription: str) -> int:
    subscriber = make_subscriber(emulator_host=pubsub.host)
    total = 0
    try:
        while True:
            response = subscriber.pull(subscription=subscription, max_messages=100, timeout=3)
            if not response.received_messages:
                return total
            total += len(response.received_messages)
            subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])
    except Exception as exc:  # DeadlineExceeded: nothing more to pull
        if type(exc).__name__ != "DeadlineExceeded":
            raise
        return total
    finally:
        subscriber.close()


def test_many_threads_pushing_one_dedupe_id_queue_exactly_one_job(
    new_app: Callable[[], App], pubsub_emulator: Emulator, clean_firestore: Emulator
) -> None:
    app = new_app()

    @app.queue("pay.fifo")
    def handle(job: object) -> None: ...

    topology = ensure_topology(
        app, project=pubsub_emulator.project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub_emulator.host
    )
    # Read the topic through a pull subscription instead of pushing: count what was published.
    subscriber = make_subscriber(emulator_host=pubsub_emulator.host)
    counter = topology[0].subscription.replace("-sub", "-count")
    subscriber.create_subscription(request={"name": counter, "topic": topology[0].topic})
    subscriber.close()
    ids: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def push() -> None:
        start.wait()
        try:
            ids.append(handle.group("g").dedupe("same").push({"n": threading.get_ident()}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert len(ids) == 12 and len(set(ids)) == 1
        assert _count_messages(pubsub_emulator, counter) == 1
    finally:
        _backend(app).stop()
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)


def test_a_failed_publish_releases_the_record_so_a_retry_goes_through(
    new_app: Callable[[], App], pubsub_emulator: Emulator, clean_firestore: Emulator
) -> None:
    app = new_app()

    @app.queue("late.fifo")
    def handle(job: object) -> None: ...

    with pytest.raises(QueueNotFoundError, match="does not exist"):
        handle.group("g").dedupe("d1").push("x")  # no topic yet: the publish fails
    ensure_topology(
        app, project=pubsub_emulator.project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub_emulator.host
    )
    try:
        # The same ordering key ("g") publishes again: without resume_publish after the failure,
        # the publisher would keep refusing that key.
        job_id = handle.group("g").dedupe("d1").push("x")
        assert job_id and handle.group("g").dedupe("d1").push("x") == job_id
    finally:
        _backend(app).stop()
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)


def test_reserve_then_duplicate_sees_the_first_job_id(store: FirestoreDedupeStore) -> None:
    key = dedupe_key("q.fifo", "g", app="shop", project="p", dedupe_id="d")
    mine = store.reserve(key, 60)
    assert not mine.duplicate
    store.confirm(mine, "job-1")
    again = store.reserve(key, 60)
    assert again.duplicate and again.job_id == "job-1"


def test_a_stale_pending_record_of_a_dead_pusher_is_taken_over(store: FirestoreDedupeStore) -> None:
    key = dedupe_key("q.fifo", "g", app="shop", project="p", dedupe_id="stale")
    old = time.time() - store.publish_timeout - 5
    assert store._create(key, DedupeRecord(token="dead-process", created_at=old, expires_at=old + 3600))
    taken = store.reserve(key, 60, wait=5)
    assert not taken.duplicate and taken.token != "dead-process"
    store.confirm(taken, "job-2")
    assert store.reserve(key, 60).job_id == "job-2"


def test_an_expired_record_is_taken_over_even_though_ttl_never_deleted_it(store: FirestoreDedupeStore) -> None:
    key = dedupe_key("q.fifo", "g", app="shop", project="p", dedupe_id="expired")
    past = time.time() - 600
    assert store._create(key, DedupeRecord(token="t0", created_at=past, expires_at=past + 300, job_id="old-job"))
    fresh = store.reserve(key, 60)
    assert not fresh.duplicate


def test_only_one_of_many_racing_takeovers_wins(store: FirestoreDedupeStore) -> None:
    key = dedupe_key("q.fifo", "g", app="shop", project="p", dedupe_id="race")
    past = time.time() - 600
    assert store._create(key, DedupeRecord(token="t0", created_at=past, expires_at=past + 300, job_id="old"))
    expected = store._get(key)
    assert expected is not None
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def take(i: int) -> None:
        barrier.wait()
        now = time.time()
        results.append(store._replace(key, expected, DedupeRecord(f"t{i + 1}", now, now + 60)))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 7 + [True]


def test_release_by_a_caller_whose_reservation_was_taken_over_keeps_the_new_owner(
    store: FirestoreDedupeStore,
) -> None:
    key = dedupe_key("q.fifo", "g", app="shop", project="p", dedupe_id="owner")
    first = store.reserve(key, 60)
    current = store._get(key)
    assert current is not None
    now = time.time()
    assert store._replace(key, current, DedupeRecord("second", now, now + 60))
    store.release(first)  # too late: not ours any more
    kept = store._get(key)
    assert kept is not None and kept.token == "second"


def test_completion_records_are_read_back_and_expire_by_their_own_field(clean_firestore: Emulator) -> None:
    client = make_firestore(project=clean_firestore.project, emulator_host=clean_firestore.host)
    done = CompletionStore(lambda: client)
    done.mark("projects/p/topics/t", "1", queue="q", status="done")
    done.mark("projects/p/topics/t", "1", queue="q", status="dead", error="ignored: first record wins")
    record = done.get("projects/p/topics/t", "1")
    assert record is not None and record.status == "done"
    assert done.get("projects/p/topics/other", "1") is None
    many = done.get_many([("projects/p/topics/t", "1"), ("projects/p/topics/t", "2")])
    assert list(many) == [("projects/p/topics/t", "1")]

    short = CompletionStore(lambda: client, ttl=-1)  # already expired when written
    short.mark("projects/p/topics/t", "3", queue="q", status="done")
    assert short.get("projects/p/topics/t", "3") is None


PUSHER = """
import sys
from queuerun import App

app = App(sys.argv[1], settings=dict(arg.split("=", 1) for arg in sys.argv[2:]))
queue = app.queue("pay.fifo")(lambda job: None)
print(queue.group("g").dedupe("same").push({"from": "process"}), flush=True)
app.backend.stop()
"""


def test_many_processes_pushing_one_dedupe_id_queue_exactly_one_job(
    new_app: Callable[[], App], pubsub_emulator: Emulator, clean_firestore: Emulator, gcp_settings: dict[str, str]
) -> None:
    import subprocess
    import sys

    app = new_app()
    app.queue("pay.fifo")(lambda job: None)
    topology = ensure_topology(
        app, project=pubsub_emulator.project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub_emulator.host
    )
    subscriber = make_subscriber(emulator_host=pubsub_emulator.host)
    counter = topology[0].subscription.replace("-sub", "-count")
    subscriber.create_subscription(request={"name": counter, "topic": topology[0].topic})
    subscriber.close()
    settings = [f"{k}={v}" for k, v in gcp_settings.items()]
    try:
        pushers = [
            subprocess.Popen(
                [sys.executable, "-c", PUSHER, app.name, *settings],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [p.communicate(timeout=120) for p in pushers]
        assert [p.returncode for p in pushers] == [0, 0, 0, 0], [err for _, err in outputs]
        ids = {out.strip() for out, _ in outputs}
        assert len(ids) == 1
        assert _count_messages(pubsub_emulator, counter) == 1
    finally:
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)


def test_two_apps_sharing_one_firestore_database_do_not_dedupe_each_others_jobs(
    new_app: Callable[[], App], pubsub_emulator: Emulator, clean_firestore: Emulator
) -> None:
    # Given two apps with a queue of the same name, both on one Firestore database
    apps = [new_app(), new_app()]
    queues = [app.queue("pay.fifo")(lambda job: None) for app in apps]
    counters = []
    subscriber = make_subscriber(emulator_host=pubsub_emulator.host)
    for app in apps:
        topology = ensure_topology(
            app, project=pubsub_emulator.project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub_emulator.host
        )
        counters.append(topology[0].subscription.replace("-sub", "-count"))
        subscriber.create_subscription(request={"name": counters[-1], "topic": topology[0].topic})
    subscriber.close()
    try:
        # When each pushes the same group and dedupe id
        ids = [queue.group("g").dedupe("order-1").push({"n": 1}) for queue in queues]
        # Then each app queued its own job (message ids are per topic: they may be equal)
        assert all(ids)
        assert [_count_messages(pubsub_emulator, counter) for counter in counters] == [1, 1]
    finally:
        for app in apps:
            _backend(app).stop()
            delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)
