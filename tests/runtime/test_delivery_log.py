"""The one log line per attempt, from the delivery core every transport shares."""

from __future__ import annotations

import logging

import pytest

from queuerun import App, Reject


def _explode() -> None:
    raise LookupError("no such customer")


def test_a_dead_letter_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    app = App("shop")

    @app.queue("billing", max_attempts=2, min_backoff=0, max_backoff=0)
    def bill(job: str) -> None:
        _explode()

    with caplog.at_level(logging.INFO, logger="queuerun"), app.local() as local:
        job_id = bill.push("x")
        local.drain(timeout=10)
    lines = [r for r in caplog.records if getattr(r, "job_id", None) == job_id]
    assert [(r.levelno, r.__dict__["status"]) for r in lines] == [(logging.WARNING, "retry"), (logging.ERROR, "dead")]
    retry, dead = lines
    assert retry.exc_info is None  # the dev log stays one line per retry
    took = dead.__dict__["duration_ms"]
    assert dead.getMessage() == f"billing job={job_id} attempt=2 {took:.1f}ms dead (LookupError: no such customer)"
    text = logging.Formatter("%(message)s").format(dead)
    assert "Traceback (most recent call last):" in text and "in _explode" in text


def test_reject_is_logged_as_dead_on_the_first_attempt(caplog: pytest.LogCaptureFixture) -> None:
    app = App("shop")

    @app.queue("orders")
    def order(job: str) -> None:
        raise Reject("out of stock")

    with caplog.at_level(logging.INFO, logger="queuerun"), app.local() as local:
        order.push("x")
        local.drain(timeout=10)
        assert [d.error for d in local.dead_letters("orders")] == ["Reject: out of stock"]
    [line] = [r for r in caplog.records if getattr(r, "status", None) == "dead"]
    assert line.__dict__["attempt"] == 1 and "Reject: out of stock" in line.getMessage()


def test_drain_fail_fast_raises_the_rejection() -> None:
    app = App("shop")

    @app.queue("orders")
    def order(job: str) -> None:
        raise Reject("out of stock")

    with app.local() as local:
        order.push("x")
        with pytest.raises(Reject, match="out of stock"):
            local.drain(timeout=10, fail_fast=True)
