"""Pull delivery's pure parts: declaration rules, the streaming-pull plan, acknowledgement failures."""

from __future__ import annotations

import logging

import pytest

from queuerun import App
from queuerun.errors import ConfigurationError
from queuerun.spec import make_spec
from queuerun.worker.acks import ack_failure
from queuerun.worker.plan import LEASE_MARGIN, fifo_hold, pull_plan


def test_exactly_once_on_a_push_queue_is_refused_naming_queue_option_and_delivery() -> None:
    app = App("units")
    with pytest.raises(ConfigurationError) as raised:
        app.queue("ledger", exactly_once=True)(lambda job: None)
    message = str(raised.value)
    assert "queue 'ledger': exactly_once is only available with delivery='pull'" in message
    assert "this queue's delivery is 'push'" in message


def test_pull_queues_may_run_an_hour_and_push_queues_under_ten_minutes() -> None:
    assert make_spec("long", delivery="pull", timeout=3600).timeout == 3600
    with pytest.raises(ConfigurationError, match=r"queue 'long': timeout must be more than 0 and at most 3600"):
        make_spec("long", delivery="pull", timeout=3601)
    with pytest.raises(ConfigurationError, match=r"queue 'long': timeout .* at most 590.*push delivery"):
        make_spec("long", timeout=600)


def test_plan_runs_concurrency_jobs_and_holds_leases_up_to_the_timeout() -> None:
    plan = pull_plan(make_spec("reports", delivery="pull", concurrency=3, timeout=1200))
    assert (plan.runners, plan.max_messages, plan.retry_in_process) == (3, 3, False)
    assert plan.max_lease_duration == 1200 + LEASE_MARGIN  # past Pub/Sub's 600 s ack deadline


def test_fifo_plan_leases_more_than_it_runs_and_holds_through_every_attempt() -> None:
    spec = make_spec("ledger.fifo", delivery="pull", concurrency=2, timeout=30, max_attempts=5, min_backoff=5)
    plan = pull_plan(spec)
    assert (plan.runners, plan.max_messages, plan.retry_in_process) == (2, 20, True)
    assert fifo_hold(spec) == 5 * 30 + 5 + 10 + 20 + 40  # five attempts, the backoffs between them
    assert plan.max_lease_duration == fifo_hold(spec) + LEASE_MARGIN


@pytest.mark.parametrize(
    ("status", "level", "says"),
    [
        ("INVALID_ACK_ID", logging.WARNING, "completion record"),
        ("PERMISSION_DENIED", logging.ERROR, "roles/pubsub.subscriber"),
        ("FAILED_PRECONDITION", logging.ERROR, "deliver the job again"),
        ("OTHER", logging.ERROR, "may deliver the job again"),
    ],
)
def test_each_refused_acknowledgement_is_reported_with_what_it_means(status: str, level: int, says: str) -> None:
    failure = ack_failure(status)
    assert failure.level == level and says in failure.meaning
