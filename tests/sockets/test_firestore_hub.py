"""The Google Cloud fan-out on the Firestore emulator: hubs of one app standing for separate instances."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from socket_helpers import Inbox

from queuerun.socket_hub import (
    MESSAGES_COLLECTION,
    PRESENCE_COLLECTION,
    FirestoreHub,
    Frame,
)

pytestmark = pytest.mark.emulators

MakeHub = Callable[..., FirestoreHub]


def texts(frames: list[Frame]) -> list[str | None]:
    return [f.text for f in frames]


def inbox_documents(client: Any) -> list[dict[str, Any]]:
    return [d.to_dict() for d in client.collection_group(MESSAGES_COLLECTION).stream()]


def presence_documents(client: Any) -> list[dict[str, Any]]:
    return [d.to_dict() for d in client.collection(PRESENCE_COLLECTION).stream()]


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_a_send_on_one_instance_reaches_a_connection_on_another_in_order(make_hub: MakeHub) -> None:
    holder, sender = make_hub("A"), make_hub("B")
    alice = Inbox("alice")
    holder.connect(alice)
    for i in range(100):
        sender.send(["alice"], Frame(text=f"m{i}"))
    assert texts(alice.wait_for(100)) == [f"m{i}" for i in range(100)]


def test_concurrent_senders_each_keep_their_order(make_hub: MakeHub) -> None:
    holder, senders = make_hub("A"), [make_hub("B"), make_hub("C")]
    alice = Inbox("alice")
    holder.connect(alice)

    def run(hub: FirestoreHub) -> None:
        for i in range(40):
            hub.send(["alice"], Frame(text=f"{hub.instance}:{i}"))

    threads = [threading.Thread(target=run, args=(hub,)) for hub in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = texts(alice.wait_for(80))
    for name in ("B", "C"):
        assert [t for t in got if t and t.startswith(name)] == [f"{name}:{i}" for i in range(40)]


def test_text_and_bytes_cross_instances_unchanged(make_hub: MakeHub) -> None:
    holder, sender = make_hub("A"), make_hub("B")
    alice = Inbox("alice")
    holder.connect(alice)
    sender.send(["alice"], Frame(text='{"status":"shipped"}'))
    sender.send(["alice"], Frame(data=b"\x00\xffbinary"))
    assert alice.wait_for(2) == [Frame(text='{"status":"shipped"}'), Frame(data=b"\x00\xffbinary")]


def test_every_connection_of_a_user_on_every_instance_receives(make_hub: MakeHub) -> None:
    a, b, sender = make_hub("A"), make_hub("B"), make_hub("C")
    on_a, on_a_too, on_b, bob = Inbox("alice"), Inbox("alice"), Inbox("alice"), Inbox("bob")
    for hub, inbox in ((a, on_a), (a, on_a_too), (b, on_b), (b, bob)):
        hub.connect(inbox)
    sender.send(["alice"], Frame(text="hi"))
    for inbox in (on_a, on_a_too, on_b):
        assert texts(inbox.wait_for(1)) == ["hi"]
    a.send(["bob", "alice"], Frame(text="both"))  # bob is remote for A, one alice local, one remote
    assert texts(bob.wait_for(1)) == ["both"]
    assert texts(on_a.wait_for(2)) == ["hi", "both"]
    assert texts(on_b.wait_for(2)) == ["hi", "both"]


def test_a_send_to_a_user_with_no_connection_writes_nothing(make_hub: MakeHub, firestore_client: Any) -> None:
    holder, sender = make_hub("A"), make_hub("B")
    holder.connect(Inbox("alice"))
    sender.send(["ghost"], Frame(text="lost?"))
    sender.send([], Frame(text="to no one"))
    assert inbox_documents(firestore_client) == []


def test_a_sender_delivers_to_its_own_connections_without_writing(make_hub: MakeHub, firestore_client: Any) -> None:
    hub = make_hub("A")
    alice = Inbox("alice")
    hub.connect(alice)
    hub.send(["alice"], Frame(text="local"))
    assert texts(alice.frames) == ["local"]  # delivered before send returned
    assert inbox_documents(firestore_client) == []


def test_delivered_messages_are_deleted_from_the_inbox(make_hub: MakeHub, firestore_client: Any) -> None:
    holder, sender = make_hub("A"), make_hub("B")
    alice = Inbox("alice")
    holder.connect(alice)
    for i in range(5):
        sender.send(["alice"], Frame(text=str(i)))
    alice.wait_for(5)
    wait_until(lambda: inbox_documents(firestore_client) == [])


def test_presence_is_withdrawn_with_the_users_last_connection(make_hub: MakeHub, firestore_client: Any) -> None:
    holder, sender = make_hub("A"), make_hub("B")
    first, second = Inbox("alice"), Inbox("alice")
    holder.connect(first)
    holder.connect(second)
    [record] = presence_documents(firestore_client)
    assert (record["user"], record["instance"]) == ("alice", "A")
    holder.disconnect(first)
    assert len(presence_documents(firestore_client)) == 1  # alice still has a connection on A
    holder.disconnect(second)
    assert presence_documents(firestore_client) == []
    sender.send(["alice"], Frame(text="gone"))
    assert inbox_documents(firestore_client) == []
    assert holder.connection_count() == 0


def test_an_expired_presence_record_is_skipped(make_hub: MakeHub, firestore_client: Any) -> None:
    """A crashed instance stops its heartbeat: once its records expire, nothing is written for it."""
    crashed, sender = make_hub("dead", heartbeat=0.2, presence_ttl=0.5), make_hub("B")
    crashed.connect(Inbox("alice"))
    crashed._stopping.set()  # the heartbeat stops, as when the instance dies
    time.sleep(1.0)
    assert len(presence_documents(firestore_client)) == 1
    sender.send(["alice"], Frame(text="anyone?"))
    assert inbox_documents(firestore_client) == []


def test_the_heartbeat_keeps_presence_alive(make_hub: MakeHub, firestore_client: Any) -> None:
    holder, sender = make_hub("A", heartbeat=0.2, presence_ttl=0.6), make_hub("B")
    alice = Inbox("alice")
    holder.connect(alice)
    time.sleep(1.2)  # twice the TTL: only refreshed records are still valid
    [record] = presence_documents(firestore_client)
    assert record["expires_at"] > dt.datetime.now(dt.UTC)
    sender.send(["alice"], Frame(text="still here"))
    assert texts(alice.wait_for(1)) == ["still here"]


def test_messages_sent_while_the_listener_is_down_arrive_once_it_is_back(make_hub: MakeHub) -> None:
    holder, sender = make_hub("A", heartbeat=0.2, presence_ttl=5), make_hub("B")
    alice = Inbox("alice")
    holder.connect(alice)
    sender.send(["alice"], Frame(text="before"))
    alice.wait_for(1)
    holder._watch.unsubscribe()  # the listener's stream dies (network, server restart)
    sender.send(["alice"], Frame(text="during"))
    sender.send(["alice"], Frame(text="after"))
    assert texts(alice.wait_for(3)) == ["before", "during", "after"]
