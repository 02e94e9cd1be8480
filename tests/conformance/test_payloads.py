"""Every payload type reaches the handler as the same type and value."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest

from queuerun import App, JobMetadata, PayloadError

from .harness import Harness

ROUND_TRIPS: list[tuple[str, Any]] = [
    ("dict", {"email": "a@b.c", "n": 1, "nested": {"list": [1, 2.5, None, True]}}),
    ("list", [1, "two", {"three": 3}]),
    ("int", 42),
    ("float", 2.5),
    ("bool", False),
    ("null", None),
    ("str", "plain text body"),
    ("str that looks like JSON", '{"a": 1}'),
    ("str that looks like a number", "123"),
    ("empty str", ""),
    ("unicode str", "żółw 🐢"),
    ("bytes", b"\x00\xffbinary\x80"),
    ("empty bytes", b""),
    ("bytes that are valid JSON", b'{"a": 1}'),
]


def test_every_payload_type_round_trips(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    received: list[Any] = []
    lock = threading.Lock()

    @app.queue("payloads", min_backoff=0)
    def handler(payload: Any, meta: JobMetadata) -> None:
        with lock:
            received.append(payload)

    with harness.run(app) as run:
        for _, value in ROUND_TRIPS:
            handler.push(value)
        run.drain(timeout=60)

    def key(v: Any) -> str:
        return f"{type(v).__name__}:{v!r}"

    assert sorted(map(key, received)) == sorted(key(v) for _, v in ROUND_TRIPS)


def test_datetimes_arrive_as_iso_8601_strings(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    received: list[Any] = []

    @app.queue("dates")
    def handler(payload: Any) -> None:
        received.append(payload)

    when = dt.datetime(2026, 11, 28, 12, 30, 5, tzinfo=dt.UTC)
    with harness.run(app) as run:
        handler.push({"at": when, "day": when.date()})
        run.drain(timeout=30)
    assert received == [{"at": "2026-11-28T12:30:05+00:00", "day": "2026-11-28"}]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [(object(), "object is not JSON serializable"), (float("nan"), "Out of range float")],
    ids=["unknown type", "nan"],
)
def test_unserializable_payload_raises_before_queueing(
    harness: Harness, app_name: str, payload: Any, fragment: str
) -> None:
    app = App(app_name)
    calls: list[Any] = []

    @app.queue("strict")
    def handler(p: Any) -> None:
        calls.append(p)

    with harness.run(app) as run:
        with pytest.raises(PayloadError) as err:
            handler.push({"value": payload})
        run.drain(timeout=30)
    assert "'strict'" in str(err.value) and fragment in str(err.value)
    assert calls == []


def test_circular_payload_raises_and_push_many_queues_nothing(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    calls: list[Any] = []

    @app.queue("strict")
    def handler(p: Any) -> None:
        calls.append(p)

    circular: dict[str, Any] = {}
    circular["self"] = circular
    with harness.run(app) as run:
        with pytest.raises(PayloadError, match="Circular reference"):
            handler.push_many([{"ok": 1}, circular])
        run.drain(timeout=30)
    assert calls == []


def test_payload_over_pubsub_limit_raises(harness: Harness, app_name: str) -> None:
    app = App(app_name)

    @app.queue("big")
    def handler(p: Any) -> None: ...

    with harness.run(app), pytest.raises(PayloadError, match=r"'big'.*10,000,000 bytes"):
        handler.push(b"x" * 10_000_001)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda q: q.push("x", params={"note": "n" * 1025}), "param 'note' is 1025 bytes"),
        (lambda q: q.push("x", params={f"p{i}": "v" for i in range(100)}), "Pub/Sub allows 100"),
        (lambda q: q.push("x", params={"k" * 300: "v"}), "attribute key"),
        (lambda q: q.push("x", user="u" * 2000), "user id is 2000 bytes"),  # the user's words, not qr-user
        (lambda q: q.dedupe("d" * 2000).push("x"), "dedupe id is 2000 bytes"),
    ],
    ids=["long param", "too many params", "long param name", "long user", "long dedupe id"],
)
def test_attribute_limits_checked_at_push(harness: Harness, app_name: str, make: Any, fragment: str) -> None:
    app = App(app_name)

    @app.queue("attrs")
    def handler(p: Any) -> None: ...

    with harness.run(app), pytest.raises(PayloadError, match=fragment):
        make(handler)


def test_group_id_over_ordering_key_limit_raises(harness: Harness, app_name: str) -> None:
    app = App(app_name)

    @app.queue("orders.fifo")
    def handler(p: Any) -> None: ...

    with harness.run(app), pytest.raises(PayloadError, match="ordering keys are at most 1024 bytes"):
        handler.group("g" * 1025).push("x")
