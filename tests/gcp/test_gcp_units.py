"""Pure parts of the Google Cloud backend: sequence clock, names, backend selection, app loading."""

from __future__ import annotations

import threading

import pytest

from queuerun import App, ConfigurationError, QueueNotFoundError
from queuerun.backends import create_backend
from queuerun.backends.firestore_store import completion_key
from queuerun.backends.gcp import GcpBackend, SequenceClock, TopicNotFoundError
from queuerun.server.serve import load_app
from queuerun.settings import Settings

GCP = {"QUEUERUN_BACKEND": "gcp", "GOOGLE_CLOUD_PROJECT": "proj"}


def test_sequence_numbers_strictly_increase_across_threads_even_within_one_microsecond() -> None:
    clock = SequenceClock()
    lock = threading.Lock()
    taken: list[int] = []

    def take() -> None:
        for _ in range(2000):
            with lock:  # the backend takes numbers under its publish lock
                taken.append(clock.next())

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert taken == sorted(taken) and len(set(taken)) == len(taken) == 8000


def test_the_gcp_backend_is_bound_to_the_app_whose_topics_it_publishes_to() -> None:
    app = App("shop", settings=GCP)

    @app.queue("emails")
    def handle(job: object) -> None: ...

    backend = app.backend
    assert isinstance(backend, GcpBackend)
    assert backend.topic_path("emails") == "projects/proj/topics/shop-emails"
    assert backend.dead_letter_subscription_path("emails") == "projects/proj/subscriptions/shop-emails-dlq-sub"
    assert backend.track_completions is False  # production: standard queues write no completion records


def test_completion_tracking_is_on_under_the_emulator() -> None:
    settings = Settings.from_environ({**GCP, "PUBSUB_EMULATOR_HOST": "127.0.0.1:1"})
    backend = create_backend(settings)
    assert isinstance(backend, GcpBackend) and backend.track_completions


def test_an_unbound_backend_says_what_is_missing() -> None:
    backend = GcpBackend(project="proj")
    with pytest.raises(Exception, match="not bound to an app"):
        backend.topic_path("emails")


def test_topic_not_found_is_a_queue_not_found_error_naming_the_topic() -> None:
    error = TopicNotFoundError("emails", "projects/p/topics/shop-emails")
    assert isinstance(error, QueueNotFoundError)
    assert "projects/p/topics/shop-emails does not exist" in str(error)


def test_completion_keys_differ_per_topic_for_the_same_message_id() -> None:
    assert completion_key("projects/p/topics/a", "1") != completion_key("projects/p/topics/b", "1")


def test_load_app_reports_bad_targets_clearly() -> None:
    with pytest.raises(ConfigurationError, match="module:attribute"):
        load_app(environ={})
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_app("no_such_module_xyz:app")
    with pytest.raises(ConfigurationError, match="not a queuerun App"):
        load_app("json:dumps")


def test_a_dead_letter_forwarded_by_pubsubs_own_policy_is_read_back() -> None:
    # What Pub/Sub's dead-letter policy publishes (attributes measured on the emulator): the job's
    # own attributes plus CloudPubSubDeadLetterSource*, and none of the server's qr-job-id/qr-error.
    import datetime as dt
    from types import SimpleNamespace

    from queuerun.backends.gcp import GcpBackend
    from queuerun.wire import build_job

    job = build_job(
        "orders.fifo",
        {"n": 1},
        group_id="g",
        dedupe_id="d",
        params={"src": "web"},
        user="ada",
        now=dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
    )
    attributes = {
        **job.attributes(sequence_number=7),
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceSubscription": "shop-orders.fifo-sub",
        "CloudPubSubDeadLetterSourceSubscriptionProject": "p",
        "CloudPubSubDeadLetterSourceTopicPublishTime": "2026-11-28T00:00:01.000Z",
    }
    message = SimpleNamespace(
        message=SimpleNamespace(attributes=attributes, data=job.data, message_id="99", publish_time=None)
    )
    letter = GcpBackend(project="p", app_name="shop")._dead_letter("orders.fifo", message)
    assert (letter.job_id, letter.payload, letter.group_id, letter.attempts) == ("99", {"n": 1}, "g", 5)
    assert (dict(letter.params), letter.user) == ({"src": "web"}, "ada")
    assert letter.queued_at == dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    assert letter.error == "delivery attempts exhausted (Pub/Sub dead-lettered it after 5 deliveries)"
