"""The emulator fixtures: both come up, behave like the services we build on, and stop completely."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import emulators
import pytest
from emulators import Emulator


def _fake_emulator(tmp_path: Path, script: str) -> Emulator:
    """A throwaway process group standing in for an emulator, to test start and stop without java."""
    log_path = tmp_path / "fake.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["/bin/sh", "-c", script], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Emulator("pubsub", "127.0.0.1:9", "test-project", process, log_path, launched_at=time.monotonic())


@pytest.mark.emulators
def test_both_emulators_answer_on_loopback(pubsub_emulator: Emulator, firestore_emulator: Emulator) -> None:
    for emulator in (pubsub_emulator, firestore_emulator):
        assert emulator.host.startswith("127.0.0.1:")
        assert emulator.project == "test-project"
        with emulators.loopback_http.open(f"http://{emulator.host}/", timeout=5) as response:
            assert response.status == 200
    assert pubsub_emulator.host != firestore_emulator.host


@pytest.mark.emulators
def test_emulator_env_names_both_hosts_without_touching_os_environ(
    emulator_env: dict[str, str], pubsub_emulator: Emulator, firestore_emulator: Emulator
) -> None:
    assert emulator_env == {
        "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
        "GOOGLE_CLOUD_PROJECT": "test-project",
    }
    assert os.environ.get("PUBSUB_EMULATOR_HOST") != pubsub_emulator.host


@pytest.mark.emulators
def test_pubsub_round_trips_a_message(emulator_environ: dict[str, str]) -> None:
    from google.cloud import pubsub_v1

    project = emulator_environ["GOOGLE_CLOUD_PROJECT"]
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, f"t-{uuid.uuid4().hex[:12]}")
    subscription = subscriber.subscription_path(project, f"s-{uuid.uuid4().hex[:12]}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    try:
        message_id = publisher.publish(topic, b"hello", job="42").result(timeout=30)

        received = []
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            received = list(subscriber.pull(subscription=subscription, max_messages=1, timeout=10).received_messages)
        subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in received])

        assert [(m.message.message_id, m.message.data, dict(m.message.attributes)) for m in received] == [
            (message_id, b"hello", {"job": "42"})
        ]
    finally:
        subscriber.delete_subscription(subscription=subscription)
        publisher.delete_topic(topic=topic)
        subscriber.close()


@pytest.mark.emulators
def test_firestore_create_of_an_existing_document_raises_already_exists(
    emulator_environ: dict[str, str], clean_firestore: Emulator
) -> None:
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import firestore

    client = firestore.Client(project=clean_firestore.project)
    doc = client.collection("dedupe").document("job-1")
    doc.create({"owner": "first"})

    with pytest.raises(AlreadyExists):
        doc.create({"owner": "second"})
    assert doc.get().to_dict() == {"owner": "first"}


@pytest.mark.emulators
def test_reset_firestore_deletes_every_document(emulator_environ: dict[str, str], firestore_emulator: Emulator) -> None:
    from google.cloud import firestore

    client = firestore.Client(project=firestore_emulator.project)
    doc = client.collection("dedupe").document(uuid.uuid4().hex)
    doc.create({"x": 1})

    emulators.reset_firestore(firestore_emulator)

    assert not doc.get().exists


@pytest.mark.emulators
def test_stop_leaves_no_process_of_the_group(emulator_tools: str, tmp_path: Path) -> None:
    # Given a Pub/Sub emulator of its own (not the session's)
    emulator = emulators.start_all(tmp_path, ("pubsub",))["pubsub"]
    assert emulators.group_alive(emulator)

    # When it is stopped
    emulators.stop(emulator)

    # Then neither the launcher nor its java child is left
    assert emulator.process.returncode is not None
    assert not emulators.group_alive(emulator)


def test_stop_kills_a_group_that_ignores_sigterm(tmp_path: Path) -> None:
    fake = _fake_emulator(tmp_path, "trap '' TERM; sleep 60 & sleep 60 & wait")
    time.sleep(0.2)  # let the shell install its trap

    started = time.monotonic()
    emulators.stop(fake, grace=0.5)

    assert not emulators.group_alive(fake)
    assert time.monotonic() - started < 5


def test_an_emulator_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = _fake_emulator(tmp_path, "echo 'Address already in use' >&2; exit 3")

    with pytest.raises(emulators.EmulatorStartError, match="exited with code 3") as failure:
        emulators.wait_ready(fake, timeout=10)

    assert "Address already in use" in str(failure.value)
    assert failure.value.exited


def test_an_emulator_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    fake = _fake_emulator(tmp_path, f"echo still booting; exec {sys.executable} -c 'import time; time.sleep(60)'")
    fake.host = f"127.0.0.1:{emulators.free_port()}"

    with pytest.raises(emulators.EmulatorStartError, match="not ready after 1 s") as failure:
        emulators.wait_ready(fake, timeout=1)

    assert "still booting" in str(failure.value)
    assert not failure.value.exited
    assert not emulators.group_alive(fake)
