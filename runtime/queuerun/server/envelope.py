"""Decoding of the wrapped body of a Pub/Sub push request. Pure: bytes in, PushedMessage or EnvelopeError out.

The shape Google documents (https://cloud.google.com/pubsub/docs/push)::

    {"message": {"data": "<base64>", "attributes": {...}, "messageId": "...", "message_id": "...",
                 "publishTime": "...", "publish_time": "...", "orderingKey": "..."},
     "subscription": "projects/P/subscriptions/S", "deliveryAttempt": 1}

``orderingKey`` and ``deliveryAttempt`` are optional: Google sends the latter only when the
subscription has a dead-letter policy, and the emulator sends neither. ``data`` and ``attributes``
may be absent (an empty message). Both spellings of the id and time are accepted, camelCase first.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from queuerun.errors import EnvelopeError

# Pub/Sub messages carry at most 10 MB; the envelope holds the data base64-encoded (4/3 larger) plus
# attributes (100 x 1 KB at most, more once JSON-escaped) and a few fields: 1 MiB covers those.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_PUSH_BODY_BYTES = 4 * -(-MAX_MESSAGE_BYTES // 3) + 1024 * 1024

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)


@dataclass(frozen=True)
class PushedMessage:
    """One message from a push request, decoded."""

    message_id: str
    data: bytes
    attributes: dict[str, str] = field(hash=False)
    publish_time: dt.datetime  # aware, UTC
    subscription: str
    delivery_attempt: int | None  # 1 on first delivery; None when Pub/Sub does not count (no dead-letter policy)
    ordering_key: str | None  # None when absent or empty


def decode_push_envelope(body: bytes, *, max_bytes: int = MAX_PUSH_BODY_BYTES) -> PushedMessage:
    """Decode a wrapped push body. Raises EnvelopeError: 413 if over ``max_bytes``, 400 if malformed."""
    if len(body) > max_bytes:
        raise EnvelopeError(413, f"push body is {len(body)} bytes, over the limit of {max_bytes}")
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise EnvelopeError(400, f"push body is not JSON: {_brief(exc)}") from exc
    if not isinstance(envelope, dict):
        raise EnvelopeError(400, f"push body must be a JSON object, not {_json_type(envelope)}")

    message = envelope.get("message")
    if not isinstance(message, dict):
        raise EnvelopeError(400, f"push body field 'message' must be an object, not {_json_type(message)}")
    subscription = _required_str(envelope, ("subscription",), "subscription")
    message_id = _required_str(message, ("messageId", "message_id"), "message.messageId")
    publish_time = _timestamp(_required_str(message, ("publishTime", "publish_time"), "message.publishTime"))

    return PushedMessage(
        message_id=message_id,
        data=_data(message.get("data")),
        attributes=_attributes(message.get("attributes")),
        publish_time=publish_time,
        subscription=subscription,
        delivery_attempt=_delivery_attempt(envelope),
        ordering_key=_optional_str(message, ("orderingKey", "ordering_key"), "message.orderingKey") or None,
    )


def _pick(obj: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if obj.get(name) is not None:
            return obj[name]
    return None


def _required_str(obj: Mapping[str, Any], names: tuple[str, ...], label: str) -> str:
    value = _pick(obj, names)
    if value is None:
        raise EnvelopeError(400, f"push body is missing {label}")
    if not isinstance(value, str) or not value:
        raise EnvelopeError(400, f"push body field {label} must be a non-empty string, not {_json_type(value)}")
    return value


def _optional_str(obj: Mapping[str, Any], names: tuple[str, ...], label: str) -> str | None:
    value = _pick(obj, names)
    if value is not None and not isinstance(value, str):
        raise EnvelopeError(400, f"push body field {label} must be a string, not {_json_type(value)}")
    return value


def _data(value: Any) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise EnvelopeError(400, f"push body field message.data must be a base64 string, not {_json_type(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(400, f"push body field message.data is not valid base64: {_brief(exc)}") from exc


def _attributes(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EnvelopeError(400, f"push body field message.attributes must be an object, not {_json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise EnvelopeError(
                400, f"push body attribute {_brief(key, 80)!r} must be a string, not {_json_type(item)}"
            )
    return dict(value)


def _delivery_attempt(envelope: Mapping[str, Any]) -> int | None:
    value = _pick(envelope, ("deliveryAttempt", "delivery_attempt"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EnvelopeError(400, f"push body field deliveryAttempt must be a whole number >= 0, not {value!r}")
    return value or None  # 0 is Pub/Sub's "not counted": no dead-letter policy


def _timestamp(text: str) -> dt.datetime:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise EnvelopeError(400, f"push body field message.publishTime is not an RFC 3339 time: {_brief(text, 80)!r}")
    fraction = (match["fraction"] or "0")[:6]  # Python keeps microseconds; Google may send nanoseconds
    zone = "+00:00" if match["zone"] in ("Z", "z") else match["zone"]
    try:
        parsed = dt.datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction:0<6}{zone}")
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise EnvelopeError(400, f"push body field message.publishTime is not a valid time: {text!r}") from exc


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)


def _brief(value: object, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
