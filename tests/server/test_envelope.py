"""Decoding of the wrapped Pub/Sub push body."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queuerun.errors import EnvelopeError, QueueRunError
from queuerun.server.envelope import MAX_MESSAGE_BYTES, MAX_PUSH_BODY_BYTES, PushedMessage, decode_push_envelope

# Captured from the Pub/Sub emulator (gcloud 528, pubsub emulator 0.8.20): a message published with
# data {"job":"hello"}, attributes a=1 b=two and ordering key "ok1", which the emulator does not send.
EMULATOR_BODY = (
    b'{"subscription":"projects/test-project/subscriptions/res-pf-wrapped","message":{"publishTime":'
    b'"2026-11-27T23:57:41.181Z","data":"eyJqb2IiOiJoZWxsbyJ9","publish_time":"2026-11-27T23:57:41.181Z",'
    b'"messageId":"1","attributes":{"a":"1","b":"two"},"message_id":"1"}}'
)


def envelope(**message_overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "data": base64.b64encode(b"payload").decode(),
        "attributes": {"k": "v"},
        "messageId": "2070443601311540",
        "message_id": "2070443601311540",
        "publishTime": "2021-02-26T19:13:55.749Z",
        "publish_time": "2021-02-26T19:13:55.749Z",
    }
    message.update(message_overrides)
    return {
        "message": {k: v for k, v in message.items() if v is not None},
        "subscription": "projects/myproject/subscriptions/mysubscription",
    }


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def rejected(body: bytes, **kwargs: Any) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as failure:
        decode_push_envelope(body, **kwargs)
    return failure.value


def test_the_body_the_emulator_sends_decodes() -> None:
    assert decode_push_envelope(EMULATOR_BODY) == PushedMessage(
        message_id="1",
        data=b'{"job":"hello"}',
        attributes={"a": "1", "b": "two"},
        publish_time=dt.datetime(2026, 11, 27, 23, 57, 41, 181000, tzinfo=dt.UTC),
        subscription="projects/test-project/subscriptions/res-pf-wrapped",
        delivery_attempt=None,
        ordering_key=None,
    )


def test_the_full_production_shape_decodes() -> None:
    body = envelope(orderingKey="user-1")
    body["deliveryAttempt"] = 3

    message = decode_push_envelope(encode(body))

    assert (message.message_id, message.data, message.attributes) == ("2070443601311540", b"payload", {"k": "v"})
    assert message.publish_time == dt.datetime(2021, 2, 26, 19, 13, 55, 749000, tzinfo=dt.UTC)
    assert (message.delivery_attempt, message.ordering_key) == (3, "user-1")
    assert message.subscription == "projects/myproject/subscriptions/mysubscription"


def test_snake_case_alone_is_enough() -> None:
    body = envelope(messageId=None, publishTime=None, message_id="7", publish_time="2021-02-26T19:13:55Z")
    body["delivery_attempt"] = 2

    message = decode_push_envelope(encode(body))

    assert (message.message_id, message.delivery_attempt) == ("7", 2)
    assert message.publish_time == dt.datetime(2021, 2, 26, 19, 13, 55, tzinfo=dt.UTC)


def test_camel_case_alone_is_enough() -> None:
    message = decode_push_envelope(encode(envelope(message_id=None, publish_time=None)))

    assert message.message_id == "2070443601311540"


def test_a_message_without_data_or_attributes_is_empty() -> None:
    message = decode_push_envelope(encode(envelope(data=None, attributes=None)))

    assert (message.data, message.attributes) == (b"", {})


def test_publish_time_is_converted_to_aware_utc_and_nanoseconds_are_truncated() -> None:
    message = decode_push_envelope(encode(envelope(publishTime="2021-02-26T20:13:55.123456789+01:00")))

    assert message.publish_time == dt.datetime(2021, 2, 26, 19, 13, 55, 123456, tzinfo=dt.UTC)
    assert message.publish_time.tzinfo is dt.UTC


def test_a_zero_delivery_attempt_means_not_counted() -> None:
    body = envelope()
    body["deliveryAttempt"] = 0

    assert decode_push_envelope(encode(body)).delivery_attempt is None


def test_an_empty_ordering_key_means_none() -> None:
    assert decode_push_envelope(encode(envelope(orderingKey=""))).ordering_key is None


def test_the_decoded_message_is_immutable() -> None:
    message = decode_push_envelope(EMULATOR_BODY)

    with pytest.raises(AttributeError):
        message.message_id = "2"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"[]", "must be a JSON object, not an array"),
        (b"null", "must be a JSON object, not null"),
        (b'{"subscription": "s"}', "'message' must be an object, not null"),
        (b'{"message": "hi", "subscription": "s"}', "'message' must be an object, not a string"),
    ],
    ids=["empty", "truncated", "not-utf8", "deeply-nested", "array", "null", "no-message", "message-string"],
)
def test_a_body_that_is_not_an_envelope_gets_400(body: bytes, reason: str) -> None:
    error = rejected(body)

    assert error.status == 400
    assert reason in str(error)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"messageId": None, "message_id": None}, "missing message.messageId"),
        ({"messageId": 12}, "message.messageId must be a non-empty string, not a number"),
        ({"messageId": ""}, "message.messageId must be a non-empty string"),
        ({"publishTime": None, "publish_time": None}, "missing message.publishTime"),
        ({"publishTime": "yesterday"}, "not an RFC 3339 time"),
        ({"publishTime": "2021-02-26T19:13:55"}, "not an RFC 3339 time"),  # no zone: ambiguous
        ({"publishTime": "2021-02-30T19:13:55Z"}, "not a valid time"),
        ({"publishTime": "0001-01-01T00:00:00+01:00"}, "not a valid time"),
        ({"data": "not base64!"}, "not valid base64"),
        ({"data": "eyJqb2IiOiJoZWxsbyJ"}, "not valid base64"),
        ({"data": 42}, "message.data must be a base64 string, not a number"),
        ({"attributes": ["a"]}, "message.attributes must be an object, not an array"),
        ({"attributes": {"a": 1}}, "attribute 'a' must be a string, not a number"),
        ({"orderingKey": 5}, "message.orderingKey must be a string"),
    ],
    ids=[
        "no-id",
        "numeric-id",
        "empty-id",
        "no-time",
        "bad-time",
        "time-without-zone",
        "impossible-date",
        "time-out-of-range",
        "bad-base64",
        "missing-padding",
        "data-number",
        "attributes-array",
        "attribute-number",
        "ordering-key-number",
    ],
)
def test_a_malformed_message_gets_400(overrides: dict[str, Any], reason: str) -> None:
    error = rejected(encode(envelope(**overrides)))

    assert error.status == 400
    assert reason in str(error)


@pytest.mark.parametrize(
    ("top_level", "reason"),
    [
        ({"subscription": None}, "missing subscription"),
        ({"subscription": ["s"]}, "subscription must be a non-empty string, not an array"),
        ({"deliveryAttempt": "3"}, "deliveryAttempt must be a whole number"),
        ({"deliveryAttempt": True}, "deliveryAttempt must be a whole number"),
        ({"deliveryAttempt": -1}, "deliveryAttempt must be a whole number"),
        ({"deliveryAttempt": 1.5}, "deliveryAttempt must be a whole number"),
    ],
    ids=[
        "no-subscription",
        "subscription-array",
        "attempt-string",
        "attempt-bool",
        "attempt-negative",
        "attempt-float",
    ],
)
def test_malformed_envelope_fields_get_400(top_level: dict[str, Any], reason: str) -> None:
    body = {**envelope(), **top_level}

    error = rejected(encode({k: v for k, v in body.items() if v is not None}))

    assert error.status == 400
    assert reason in str(error)


def test_an_oversized_body_gets_413_before_any_parsing() -> None:
    error = rejected(b"x" * 1001, max_bytes=1000)

    assert error.status == 413
    assert "1001 bytes" in str(error)


def test_the_default_limit_admits_the_largest_message_pubsub_sends() -> None:
    # 10 MB of data is 13.4 MB once base64-encoded in the envelope.
    body = encode(envelope(data=base64.b64encode(b"\0" * MAX_MESSAGE_BYTES).decode()))

    assert len(body) <= MAX_PUSH_BODY_BYTES
    assert len(decode_push_envelope(body).data) == MAX_MESSAGE_BYTES


def test_envelope_error_belongs_to_the_error_tree() -> None:
    assert issubclass(EnvelopeError, QueueRunError)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_envelope_error(body: bytes) -> None:
    try:
        decode_push_envelope(body)
    except EnvelopeError as exc:
        assert exc.status in (400, 413)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=10,
)
_field_value = _json | st.sampled_from(["", "eyJqb2IiOiJoZWxsbyJ9", "2021-02-26T19:13:55.749Z", "1"])
_message_keys = st.sampled_from(
    ["data", "attributes", "messageId", "message_id", "publishTime", "publish_time", "orderingKey"]
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(_message_keys, _field_value, max_size=7),
    st.dictionaries(st.sampled_from(["subscription", "deliveryAttempt", "delivery_attempt"]), _field_value),
)
def test_any_envelope_shaped_json_decodes_or_raises_envelope_error(
    message: dict[str, Any], top_level: dict[str, Any]
) -> None:
    body = json.dumps({"message": message, **top_level}).encode()

    try:
        decoded = decode_push_envelope(body)
    except EnvelopeError as exc:
        assert exc.status == 400
    else:
        assert decoded.publish_time.tzinfo is dt.UTC
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in decoded.attributes.items())
