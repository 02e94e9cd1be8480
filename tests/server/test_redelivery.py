"""The dev server's watch on nacked deliveries the emulator may drop."""

from __future__ import annotations

from queuerun.server.redelivery import Overdue, RedeliveryWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_nacked_job_not_redelivered_within_the_grace_is_reported_once() -> None:
    clock = Clock()
    watch = RedeliveryWatch(grace=30, clock=clock)
    watch.nacked("q", "1", attempt=2)
    clock.now += 29
    assert watch.overdue() == []
    clock.now += 1
    assert watch.overdue() == [Overdue("q", "1", 2, 100.0)]
    assert watch.overdue() == []


def test_a_redelivered_job_is_not_reported_and_a_new_nack_restarts_its_wait() -> None:
    clock = Clock()
    watch = RedeliveryWatch(grace=30, clock=clock)
    watch.nacked("q", "1", attempt=1)
    clock.now += 10
    watch.delivered("q", "1")
    watch.nacked("q", "1", attempt=2)
    clock.now += 25
    assert watch.overdue() == []
    watch.delivered("q", "1")
    clock.now += 100
    assert watch.overdue() == []
