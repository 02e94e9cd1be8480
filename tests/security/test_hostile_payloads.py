"""Payloads: what push() accepts decodes on delivery; what does not round-trip is refused or converted
as the README says; a typed queue validates at the door; payload values never reach logs or dead letters."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import logging
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.endpoint import AppHttp
from queuerun.errors import PayloadError, PayloadValidationError
from queuerun.limits import MAX_DEPTH
from queuerun.wire import build_job

CARD = "4111111111111111"


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


# -- depth: push refuses what delivery could not decode


def test_a_payload_nested_970_deep_is_refused_at_push() -> None:
    # Before: push() accepted it and its delivery looped (RecursionError while decoding, nacked again).
    app = App("deep")

    @app.queue("tasks")
    def tasks(payload: Any) -> None: ...

    with app.local() as local:
        with pytest.raises(PayloadError, match=f"nested deeper than {MAX_DEPTH} levels"):
            tasks.push(_nested(970))
        local.drain(timeout=10)
        assert local.dead_letters("tasks") == []


def test_a_payload_at_the_depth_limit_is_delivered_whole() -> None:
    app = App("deep")
    got: list[Any] = []

    @app.queue("tasks")
    def tasks(payload: Any) -> None:
        got.append(payload)

    with app.local() as local:
        tasks.push(_nested(MAX_DEPTH))
        local.drain(timeout=10)
    assert got == [_nested(MAX_DEPTH)]


# -- types that do not round-trip (issue 14): converted as the README documents, or refused


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_documented_conversions_reach_the_handler() -> None:
    app = App("types")
    got: list[Any] = []

    @app.queue("tasks")
    def tasks(payload: Any) -> None:
        got.append(payload)

    with app.local() as local:
        tasks.push(
            {
                "price": decimal.Decimal("10.10"),
                "tags": {"b", "a", "c"},
                "pair": (1, 2),
                "colour": Colour.RED,
                "id": uuid.UUID(int=1),
                "day": dt.date(2026, 1, 2),
                "at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                "point": Point(1, 2),
                Colour.RED: "enum key",
            }
        )
        local.drain(timeout=10)
    assert got == [
        {
            "price": "10.10",  # a string: the digits survive, a float would not keep them
            "tags": ["a", "b", "c"],  # sorted: equal sets give equal bytes and the same dedupe id
            "pair": [1, 2],
            "colour": "red",
            "id": "00000000-0000-0000-0000-000000000001",
            "day": "2026-01-02",
            "at": "2026-01-02T03:04:05+00:00",
            "point": {"x": 1, "y": 2},
            "red": "enum key",
        }
    ]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({1: "a"}, "$: dict key of type int; keys must be str"),
        ({"a": {(1, 2): "b"}}, "$.a: dict key of type tuple"),
        ({"a": [{None: 1}]}, "$.a[0]: dict key of type NoneType"),
        ({"amount": decimal.Decimal("NaN")}, "$.amount: Decimal NaN is not a finite number"),
        ({"when": [object()]}, "$.when[0]: object is not JSON serializable"),
        ({"s": "\ud800"}, "$.s holds a lone surrogate"),
        ({"file": b"x", "other": {"$queuerun": "bytes", "base64": "eA=="}}, "'$queuerun'"),
    ],
    ids=["int-key", "tuple-key", "none-key", "nan-decimal", "unknown-type", "surrogate", "tag-spoof"],
)
def test_what_does_not_round_trip_is_refused_at_push_naming_the_path(payload: Any, fragment: str) -> None:
    app = App("types")

    @app.queue("tasks")
    def tasks(payload: Any) -> None: ...

    with app.local(), pytest.raises(PayloadError) as refused:
        tasks.push(payload)
    assert fragment in str(refused.value) and "'tasks'" in str(refused.value)


def test_equal_sets_have_the_same_default_dedupe_id() -> None:
    app = App("types")
    got: list[Any] = []

    @app.queue("tags.fifo")
    def tags(payload: Any) -> None:
        got.append(payload)

    with app.local() as local:
        a = tags.group("g").push({"tags": {f"t{i}" for i in range(50)}})
        b = tags.group("g").push({"tags": set(reversed([f"t{i}" for i in range(50)]))})
        local.drain(timeout=10)
    assert a == b and len(got) == 1


plain_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=40,
)


@settings(max_examples=100, deadline=None)
@given(payload=plain_json)
def test_any_plain_json_value_round_trips(payload: Any) -> None:
    from queuerun.payload import decode, encode

    try:
        data, content_type = encode(payload, queue="q")
    except PayloadError as exc:  # only lone surrogates (hypothesis's text() makes them) are refused
        assert "lone surrogate" in str(exc)
        return
    assert decode(data, content_type) == payload


# -- typed queues validate at the door (issue 14)


class Charge(BaseModel):
    card: str
    amount: int


def typed_app() -> tuple[App, list[Charge]]:
    app = App("typed")
    got: list[Charge] = []

    @app.queue("charges", http=True, public=True)
    def charges(charge: Charge, meta: JobMetadata) -> None:
        got.append(charge)

    return app, got


def test_a_body_that_fails_validation_gets_422_naming_the_field() -> None:
    # Before: 202, then the job went to dead letters.
    app, got = typed_app()
    with app.local() as local, TestClient(AppHttp(app)) as client:
        res = client.post("/charges", json={"card": CARD, "amount": "lots"})
        ok = client.post("/charges", json={"card": CARD, "amount": 5})
        local.drain(timeout=10)
        dead = local.dead_letters("charges")
    assert res.status_code == 422
    assert "field 'amount'" in res.json()["error"] and "(got str)" in res.json()["error"]
    assert ok.status_code == 202
    assert got == [Charge(card=CARD, amount=5)] and dead == []


def test_push_raises_payload_validation_error_and_queues_nothing() -> None:
    app, got = typed_app()
    charges = app.queues("charges")
    with app.local() as local:
        with pytest.raises(PayloadValidationError, match="field 'card'"):
            charges.push({"amount": 5})
        with pytest.raises(PayloadValidationError):
            charges.push_many([{"card": CARD, "amount": 1}, {"card": CARD}])  # all or nothing
        charges.push(Charge(card=CARD, amount=1))  # a model instance is what the handler gets back
        local.drain(timeout=10)
    assert got == [Charge(card=CARD, amount=1)]


# -- leaks: payload values never reach logs or dead-letter attributes


def test_a_failed_typed_payload_leaves_no_value_in_logs_or_dead_letters(caplog: pytest.LogCaptureFixture) -> None:
    # A job that fails validation on delivery (published by another producer, so not checked at push).
    app, got = typed_app()
    caplog.set_level(logging.DEBUG)
    with app.local() as local:
        job = build_job(
            "charges", {"card": CARD, "amount": "lots"}, group_id=None, dedupe_id=None, params={}, user=None
        )
        app.backend.enqueue(app.spec("charges"), [job])
        local.drain(timeout=10)
        [dead] = local.dead_letters("charges")
    assert got == []
    assert "field 'amount'" in dead.error and "(got str)" in dead.error
    assert CARD not in dead.error and "lots" not in dead.error
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert CARD not in logged and "lots" not in logged


def test_an_unserializable_payload_error_does_not_echo_the_payload() -> None:
    app = App("leaky")

    @app.queue("tasks")
    def tasks(payload: Any) -> None: ...

    with app.local(), pytest.raises(PayloadError) as refused:
        tasks.push({"card": CARD, "bad": object()})
    assert CARD not in str(refused.value)
