"""Errors name the queue, the field and the value."""

from __future__ import annotations

from typing import Any

import pytest

from queuerun import App, ConfigurationError, GroupIdRequiredError, QueueNotFoundError

from .harness import Harness


def test_unknown_queue(harness: Harness, app_name: str) -> None:
    app = App(app_name)

    @app.queue("known")
    def handler(job: Any) -> None: ...

    with harness.run(app), pytest.raises(QueueNotFoundError) as err:
        app.queues("unknown").push("x")
    assert str(err.value) == "no queue named 'unknown' (declared: known)"


def test_fifo_push_without_group(harness: Harness, app_name: str) -> None:
    app = App(app_name)

    @app.queue("orders.fifo")
    def handler(job: Any) -> None: ...

    with harness.run(app), pytest.raises(GroupIdRequiredError, match=r"'orders.fifo' is FIFO.*group_id is None"):
        handler.push("x")


def test_group_on_a_standard_queue(harness: Harness, app_name: str) -> None:
    app = App(app_name)

    @app.queue("emails")
    def handler(job: Any) -> None: ...

    with harness.run(app), pytest.raises(ConfigurationError, match=r"'emails' is a standard queue: group\('g'\)"):
        handler.group("g")


@pytest.mark.parametrize("bad", ["", "has space", "dots.in.name", "slash/name", "x.fifo.fifo", "a" * 81, "ünï"])
def test_bad_queue_names(bad: str) -> None:
    app = App("names")
    with pytest.raises(ConfigurationError, match="queue name"):
        app.queue(bad)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"timeout": 0}, "timeout must be more than 0 and at most 590, got 0"),
        ({"timeout": 600}, "timeout must be more than 0 and at most 590, got 600"),
        ({"timeout": "60"}, "timeout must be a number of seconds, got '60'"),
        ({"max_attempts": 0}, "max_attempts must be between 1 and 100, got 0"),
        ({"max_attempts": 101}, "max_attempts must be between 1 and 100, got 101"),
        ({"min_backoff": -1}, "min_backoff must be at least 0 and at most 600, got -1"),
        ({"max_backoff": 601}, "max_backoff must be at least 0 and at most 600, got 601"),
        ({"min_backoff": 20, "max_backoff": 10}, "max_backoff must be at least min_backoff (20), got 10"),
        ({"dedupe_window": 0}, "dedupe_window must be more than 0"),
        ({"accepts": ["image/png"]}, "accepts has unsupported content types ['image/png']"),
        ({"concurrency": 0}, "concurrency must be between 1 and 1000, got 0"),
        ({"delivery": "carrier pigeon"}, "delivery must be 'push' or 'pull'"),
        ({"exactly_once": True}, "exactly_once is only available with delivery='pull'"),
        ({"retries": 3}, "unknown options ['retries']"),
    ],
)
def test_out_of_range_options(options: dict[str, Any], fragment: str) -> None:
    app = App("opts")
    with pytest.raises(ConfigurationError) as err:
        app.queue("jobs", **options)
    assert "queue 'jobs'" in str(err.value)
    assert fragment in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    app = App("many")
    with pytest.raises(ConfigurationError) as err:
        app.queue("bad name", timeout=-1, max_attempts=0)
    assert len(err.value.problems) == 3
