"""Payload serialization: dict/list/JSON values, ``str`` and ``bytes`` each round-trip as themselves.

JSON payloads that hold bytes (or files uploaded through a queue's HTTP endpoint) travel as
tagged JSON, so those values come back as bytes and :class:`UploadedFile`, not as text.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Final

from .errors import PayloadError

JSON: Final = "application/json"
TEXT: Final = "text/plain; charset=utf-8"
BYTES: Final = "application/octet-stream"
TAGGED_JSON: Final = "application/vnd.queuerun+json"
CONTENT_TYPES: Final = (JSON, TEXT, BYTES, TAGGED_JSON)
_TAG: Final = "$queuerun"


@dataclass(frozen=True)
class UploadedFile:
    """A file from a multipart form, kept whole: the handler gets its name, type and bytes."""

    filename: str
    content_type: str
    data: bytes

    def __repr__(self) -> str:
        return f"UploadedFile({self.filename!r}, {self.content_type!r}, {len(self.data)} bytes)"


def _tagged(value: Any) -> dict[str, str] | None:
    if isinstance(value, bytes | bytearray | memoryview):
        return {_TAG: "bytes", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, UploadedFile):
        return {
            _TAG: "file",
            "filename": value.filename,
            "content_type": value.content_type,
            "base64": base64.b64encode(value.data).decode("ascii"),
        }
    return None


def _untag(obj: dict[str, Any]) -> Any:
    kind = obj.get(_TAG)
    # validate=True: our encoder always writes clean base64, so anything else is a corrupt payload.
    if kind == "bytes" and set(obj) == {_TAG, "base64"}:
        return base64.b64decode(obj["base64"], validate=True)
    if kind == "file" and set(obj) == {_TAG, "filename", "content_type", "base64"}:
        return UploadedFile(obj["filename"], obj["content_type"], base64.b64decode(obj["base64"], validate=True))
    return obj


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
    tagged = False

    def default(value: Any) -> Any:
        nonlocal tagged
        tag = _tagged(value)
        if tag is not None:
            tagged = True
            return tag
        return _to_json(value)

    try:
        text = json.dumps(payload, default=default, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        shown = repr(payload)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise PayloadError(f"queue {queue!r}: payload {shown} cannot be serialized: {exc}") from exc
    return text.encode("utf-8"), (TAGGED_JSON if tagged else JSON)


def decode(data: bytes, content_type: str) -> Any:
    """Inverse of :func:`encode`. Raises ValueError for unknown content types or bad JSON."""
    if content_type == BYTES:
        return data
    if content_type == TEXT:
        return data.decode("utf-8")
    try:
        if content_type == JSON:
            return json.loads(data)
        if content_type == TAGGED_JSON:
            return json.loads(data, object_hook=_untag)
    except json.JSONDecodeError as exc:
        raise ValueError(f"data is not JSON (content type {content_type}): {exc}") from exc
    raise ValueError(f"unknown payload content type {content_type!r}")


def content_hash(data: bytes, content_type: str) -> str:
    """The default dedupe id: a hash of the serialized payload (key order does not matter)."""
    if content_type in (JSON, TAGGED_JSON):
        canonical = json.dumps(json.loads(data), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        data = canonical.encode("utf-8")
    return hashlib.sha256(content_type.encode() + b"\0" + data).hexdigest()
