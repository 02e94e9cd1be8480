"""Payload serialization: dict/list/JSON values, ``str`` and ``bytes`` each round-trip as themselves."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import uuid
from typing import Any, Final

from .errors import PayloadError

JSON: Final = "application/json"
TEXT: Final = "text/plain; charset=utf-8"
BYTES: Final = "application/octet-stream"
CONTENT_TYPES: Final = (JSON, TEXT, BYTES)


def _to_json(value: Any) -> Any:
    # The payload is a snapshot sent to another process: values with an obvious JSON form get it,
    # as queue-run did for Date; anything else is refused rather than guessed.
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)  # pydantic v2 models
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(payload: Any, *, queue: str) -> tuple[bytes, str]:
    """Serialize a payload to (data, content type). Raises PayloadError naming the queue and value."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload), BYTES
    if isinstance(payload, str):
        return payload.encode("utf-8"), TEXT
    try:
        text = json.dumps(payload, default=_to_json, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        shown = repr(payload)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise PayloadError(f"queue {queue!r}: payload {shown} cannot be serialized: {exc}") from exc
    return text.encode("utf-8"), JSON


def decode(data: bytes, content_type: str) -> Any:
    """Inverse of :func:`encode`. Raises ValueError for unknown content types or bad JSON."""
    if content_type == BYTES:
        return data
    if content_type == TEXT:
        return data.decode("utf-8")
    if content_type == JSON:
        return json.loads(data)
    raise ValueError(f"unknown payload content type {content_type!r}")


def content_hash(data: bytes, content_type: str) -> str:
    """The default dedupe id: a hash of the serialized payload (key order does not matter)."""
    if content_type == JSON:
        canonical = json.dumps(json.loads(data), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        data = canonical.encode("utf-8")
    return hashlib.sha256(content_type.encode() + b"\0" + data).hexdigest()
