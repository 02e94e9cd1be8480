"""Pure pieces: spec rules, settings, payload codec, dedupe reservations."""

from __future__ import annotations

import threading
import time

import pytest

from queuerun.dedupe import DedupeRecord, MemoryDedupeStore, dedupe_key
from queuerun.errors import ConfigurationError, PushError, PushOutcomeUnknownError
from queuerun.manifest import Manifest
from queuerun.payload import BYTES, JSON, TEXT, content_hash, decode, encode
from queuerun.settings import ENV, Settings
from queuerun.spec import QueueSpec, make_spec, spec_problems


def test_spec_defaults_and_derived_values() -> None:
    spec = make_spec("orders.fifo")
    assert (spec.fifo, spec.timeout, spec.max_attempts, spec.min_backoff, spec.max_backoff) == (
        True,
        300.0,
        5,
        10.0,
        600.0,
    )
    assert spec.dedupe_window == 300.0
    assert spec.ack_deadline == 310
    assert make_spec("x1", timeout=1).ack_deadline == 11
    assert make_spec("x2", timeout=590).ack_deadline == 600  # the longest push timeout keeps its margin


def test_backoff_doubles_up_to_the_max() -> None:
    spec = make_spec("q", min_backoff=10, max_backoff=60)
    assert [spec.backoff(n) for n in range(1, 6)] == [10, 20, 40, 60, 60]
    assert make_spec("q0", min_backoff=0).backoff(3) == 0


def test_pull_delivery_allows_long_timeouts_and_exactly_once() -> None:
    spec = make_spec("batch", delivery="pull", timeout=3600, exactly_once=True)
    assert (spec.delivery, spec.timeout, spec.exactly_once) == ("pull", 3600.0, True)


def test_unknown_values_are_skipped() -> None:
    class Later:  # stands in for a pulumi.Output
        pass

    problems = spec_problems("q", {"timeout": Later(), "max_attempts": 0}, known=lambda v: not isinstance(v, Later))
    assert problems == ["queue 'q': max_attempts must be between 1 and 100, got 0"]


def test_manifest_round_trip() -> None:
    specs = (make_spec("emails", http=True, accepts=["text/plain"]), make_spec("o.fifo", timeout=60))
    data = Manifest("shop", specs).to_dict()
    assert Manifest.from_dict(data) == Manifest("shop", specs)
    with pytest.raises(ConfigurationError, match="version must be 1"):
        Manifest.from_dict({**data, "version": 9})
    assert QueueSpec.from_dict(specs[0].to_dict()) == specs[0]


def test_settings_default_to_embedded() -> None:
    assert Settings.from_environ({}).backend == "embedded"


def test_settings_refuse_embedded_on_cloud_run() -> None:
    with pytest.raises(ConfigurationError, match="QUEUERUN_BACKEND='embedded' on Cloud Run"):
        Settings.from_environ({ENV.CLOUD_RUN_SERVICE: "shop"})


def test_settings_refuse_insecure_push_on_cloud_run() -> None:
    env = {ENV.CLOUD_RUN_SERVICE: "shop", ENV.BACKEND: "gcp", ENV.PROJECT: "p", ENV.INSECURE_PUSH: "1"}
    with pytest.raises(ConfigurationError, match="QUEUERUN_INSECURE_PUSH is refused on Cloud Run"):
        Settings.from_environ(env)


def test_settings_gcp_needs_a_project_and_report_all_problems() -> None:
    with pytest.raises(ConfigurationError) as err:
        Settings.from_environ({ENV.BACKEND: "gcp", ENV.CLOUD_RUN_SERVICE: "s", ENV.INSECURE_PUSH: "yes"})
    assert len(err.value.problems) == 2
    with pytest.raises(ConfigurationError, match="must be 'embedded' or 'gcp', got 'sqs'"):
        Settings.from_environ({ENV.BACKEND: "sqs"})


def test_settings_read_the_emulator_hosts() -> None:
    s = Settings.from_environ(
        {ENV.BACKEND: "gcp", ENV.PROJECT: "p", ENV.PUBSUB_EMULATOR_HOST: "127.0.0.1:1", ENV.INSECURE_PUSH: "true"}
    )
    assert (s.backend, s.project, s.pubsub_emulator_host, s.insecure_push) == ("gcp", "p", "127.0.0.1:1", True)


@pytest.mark.parametrize(
    ("value", "content_type"),
    [({"a": [1, None]}, JSON), ("text", TEXT), (b"\x00\x01", BYTES), (7, JSON), ('"quoted"', TEXT)],
)
def test_codec_round_trip_keeps_the_type(value: object, content_type: str) -> None:
    data, ct = encode(value, queue="q")
    assert ct == content_type
    assert decode(data, ct) == value and type(decode(data, ct)) is type(value)


def test_content_hash_ignores_key_order_but_not_type() -> None:
    a, ct = encode({"x": 1, "y": 2}, queue="q")
    b, _ = encode({"y": 2, "x": 1}, queue="q")
    assert content_hash(a, ct) == content_hash(b, ct)
    assert content_hash(b"1", BYTES) != content_hash(b"1", JSON)


def test_dedupe_keys_of_other_apps_and_projects_differ() -> None:
    # One Firestore database may serve several apps: a shared key would return another app's job id.
    keys = {
        dedupe_key("pay.fifo", "g", "d", app="shop", project="p1"),
        dedupe_key("pay.fifo", "g", "d", app="blog", project="p1"),
        dedupe_key("pay.fifo", "g", "d", app="shop", project="p2"),
        dedupe_key("pay.fifo", "g", "d", app="shop-pay.fifo", project="p1"),
    }
    assert len(keys) == 4


def test_a_key_whose_push_had_an_unknown_outcome_is_held_for_the_window_not_requeued() -> None:
    store = MemoryDedupeStore()
    store.publish_timeout = 0.1  # an ordinary pending record would be taken over by now
    store.mark_unknown(store.reserve("k", 0.5))
    time.sleep(0.2)  # past the pending take-over age, inside the window
    with pytest.raises(PushOutcomeUnknownError, match="may be queued"):
        store.reserve("k", 0.5, wait=0)
    deadline = time.monotonic() + 5
    while True:  # once the window ends the key is free again
        try:
            assert store.reserve("k", 0.5, wait=0).token is not None
            break
        except PushOutcomeUnknownError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_dedupe_reservation_lifecycle() -> None:
    store = MemoryDedupeStore()
    first = store.reserve("k", 60)
    assert first.token is not None and first.job_id is None
    store.confirm(first, "job-1")
    assert store.reserve("k", 60).job_id == "job-1"


def test_released_reservation_can_be_taken_again() -> None:
    store = MemoryDedupeStore()
    store.release(store.reserve("k", 60))
    assert store.reserve("k", 60).token is not None


def test_expired_record_is_taken_over() -> None:
    store = MemoryDedupeStore()
    store._create("k", DedupeRecord(token="old", created_at=time.time() - 100, expires_at=time.time() - 1, job_id="j"))
    assert store.reserve("k", 60).token is not None


def test_stale_pending_record_is_taken_over() -> None:
    # A pusher that died between reserving and publishing must not block the key for the window.
    store = MemoryDedupeStore()
    store.publish_timeout = 0.2
    store._create("k", DedupeRecord(token="dead", created_at=time.time() - 1, expires_at=time.time() + 300))
    assert store.reserve("k", 300).token is not None


def test_pending_record_makes_a_second_pusher_wait_for_the_id() -> None:
    store = MemoryDedupeStore()
    first = store.reserve("k", 60)
    threading.Timer(0.2, store.confirm, args=(first, "job-1")).start()
    assert store.reserve("k", 60).job_id == "job-1"


def test_pending_record_times_out_with_a_push_error() -> None:
    store = MemoryDedupeStore()
    store.reserve("k", 60)
    with pytest.raises(PushError, match="still being pushed"):
        store.reserve("k", 60, wait=0.1)
