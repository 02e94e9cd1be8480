"""The dev server's bookkeeping of deliveries: which jobs the emulator dropped, and which it took over."""

from __future__ import annotations

from queuerun.server.redelivery import RedeliveryWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def no_backoff(attempt: int) -> float:
    return 0.0


def test_a_job_never_delivered_is_claimed_once_the_grace_has_passed_since_it_was_first_seen() -> None:
    clock = Clock()
    watch = RedeliveryWatch(grace=30, clock=clock)
    assert watch.claim("q", "1", first_seen=clock.now, backoff=no_backoff) is None
    clock.now += 29
    assert watch.claim("q", "1", first_seen=100.0, backoff=no_backoff) is None
    clock.now += 1
    assert watch.claim("q", "1", first_seen=100.0, backoff=no_backoff) == 0
    # Claimed and its own delivery not arrived yet: not claimed a second time.
    clock.now += 100
    assert watch.claim("q", "1", first_seen=100.0, backoff=no_backoff) is None


def test_a_running_delivery_is_never_claimed_and_an_answered_one_is_forgotten() -> None:
    clock = Clock()
    watch = RedeliveryWatch(grace=30, clock=clock)
    assert watch.arrived("q", "1", None)
    clock.now += 1000
    assert watch.claim("q", "1", first_seen=0.0, backoff=no_backoff) is None
    watch.finished("q", "1")
    assert not watch.owns("q", "1")


def test_a_nacked_job_waits_the_grace_or_twice_the_queues_backoff_before_it_is_claimed() -> None:
    clock = Clock()
    watch = RedeliveryWatch(grace=30, clock=clock)
    watch.arrived("q", "1", None)
    watch.nacked("q", "1", attempt=3)
    watch.finished("q", "1")
    backoff = {3: 40.0}.__getitem__  # a slow retry policy is not a drop
    clock.now += 79
    assert watch.claim("q", "1", first_seen=0.0, backoff=backoff) is None
    clock.now += 1
    assert watch.claim("q", "1", first_seen=0.0, backoff=backoff) == 3


def test_a_redelivery_by_pubsub_within_the_grace_keeps_the_job_with_pubsub() -> None:
    clock = Clock()
    watch = RedeliveryWatch(grace=30, clock=clock)
    watch.arrived("q", "1", None)
    watch.nacked("q", "1", attempt=1)
    watch.finished("q", "1")
    clock.now += 20
    assert watch.arrived("q", "1", None)  # Pub/Sub delivered it again
    clock.now += 100
    assert watch.claim("q", "1", first_seen=0.0, backoff=no_backoff) is None  # still running
    watch.nacked("q", "1", attempt=2)
    watch.finished("q", "1")
    clock.now += 29
    assert watch.claim("q", "1", first_seen=0.0, backoff=no_backoff) is None  # the grace counts from the nack


def test_once_claimed_only_the_dev_servers_own_deliveries_run_the_job() -> None:
    clock = Clock()
    watch = RedeliveryWatch(grace=30, clock=clock, token="secret")
    clock.now += 30
    assert watch.claim("q", "1", first_seen=100.0, backoff=lambda n: 5.0) == 0
    assert not watch.arrived("q", "1", None)  # a late copy from the emulator
    assert not watch.arrived("q", "1", "forged")
    assert watch.arrived("q", "1", "secret")
    watch.nacked("q", "1", attempt=1)
    watch.finished("q", "1")
    watch.released("q", "1")
    # Its own retries follow the queue's backoff alone: no emulator to wait for.
    clock.now += 4
    assert watch.claim("q", "1", first_seen=100.0, backoff=lambda n: 5.0) is None
    clock.now += 1
    assert watch.claim("q", "1", first_seen=100.0, backoff=lambda n: 5.0) == 1


def test_a_claim_whose_delivery_never_arrived_is_released_for_the_next_pass() -> None:
    clock = Clock()
    watch = RedeliveryWatch(grace=0, clock=clock, token="t")
    assert watch.claim("q", "1", first_seen=100.0, backoff=no_backoff) == 0
    watch.released("q", "1")  # the server was stopping
    assert watch.claim("q", "1", first_seen=100.0, backoff=no_backoff) == 0
