"""Payload serialization: dict/list/JSON values, ``str`` and ``bytes`` each round-trip as themselves.

JSON payloads that hold bytes (or files uploaded through a queue's HTTP endpoint) travel as
tagged JSON, so those values come back as bytes and :class:`UploadedFile`, not as text. Values JSON
has no type for are converted or refused at push, by one pass (:class:`_Plain`); errors name the
path and the type, never the value.
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

from . import limits
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


_SCALARS: Final = (str, int, float, bool, type(None))


def _flat_dict(value: dict[Any, Any]) -> bool:
    return all(type(k) is str for k in value) and all(type(v) in _SCALARS for v in value.values())


def _flat_list(value: list[Any]) -> bool:
    return all(type(v) in _SCALARS for v in value)


class _Unfit(Exception):
    """A value that cannot travel: where it is (a path like ``$.items[2]``) and why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        shown = path if len(path) <= 80 else "..." + path[-60:]
        super().__init__(f"{shown}: {reason}")


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"


class _Plain:
    """Turns a payload into plain JSON values, as documented in the README ("Payloads"):

    datetime/date/time -> ISO 8601 string, UUID and Decimal -> string (Decimal keeps its digits),
    Enum -> its value, tuple -> list, set/frozenset -> sorted list (sorted, so equal sets give equal
    bytes and the same default dedupe id), dataclass -> dict, pydantic model -> ``model_dump(mode="json")``,
    bytes and UploadedFile -> tagged objects. Dict keys must be strings: ``json`` would turn ``1``
    into ``"1"`` and let ``{1: .., "1": ..}`` collide. Nesting is bounded by ``limits.MAX_DEPTH`` so
    the payload decodes on delivery, on any stack. Errors name the path and the type, never the value
    (payload values must not reach logs or dead-letter attributes).
    """

    def __init__(self) -> None:
        self.tagged = False
        self.reserved_key_at: str | None = None  # a dict holding "$queuerun": ambiguous once tagged
        self._open: set[int] = set()  # ids of the containers enclosing the value being converted

    def convert(self, value: Any, path: str, depth: int) -> Any:
        kind = type(value)
        if kind in _SCALARS:
            return value
        if depth >= limits.MAX_DEPTH:
            raise _Unfit(path, f"nested deeper than {limits.MAX_DEPTH} levels")
        if kind is dict and _flat_dict(value):  # the common case, checked at C speed: kept as is
            if _TAG in value and self.reserved_key_at is None:
                self.reserved_key_at = path
            return value
        if kind is list and _flat_list(value):
            return value
        if id(value) in self._open:
            raise _Unfit(path, "Circular reference: the value contains itself")
        if isinstance(value, dict | list | tuple):
            self._open.add(id(value))
            try:
                return self._container(value, path, depth)
            finally:
                self._open.discard(id(value))
        return self._other(value, path, depth)

    def _container(self, value: Any, path: str, depth: int) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if type(key) is not str:
                    if isinstance(key, enum.Enum) and isinstance(key.value, str):
                        key = key.value
                    else:
                        raise _Unfit(path, f"dict key of type {type(key).__name__}; keys must be str")
                if key == _TAG and self.reserved_key_at is None:
                    self.reserved_key_at = path
                # Paths are built only for values that need converting: most are scalars.
                out[key] = item if type(item) in _SCALARS else self.convert(item, _key(path, key), depth + 1)
            return out
        return [
            item if type(item) in _SCALARS else self.convert(item, f"{path}[{i}]", depth + 1)
            for i, item in enumerate(value)
        ]

    def _other(self, value: Any, path: str, depth: int) -> Any:
        kind = type(value)
        if isinstance(value, enum.Enum):
            return self.convert(value.value, path, depth)
        if isinstance(value, str):  # a str subclass: its characters, not its __str__
            return value[:]
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int.__index__(value)
        if isinstance(value, float):
            return float.__float__(value)
        tag = _tagged(value)
        if tag is not None:
            self.tagged = True
            return tag
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, uuid.UUID | decimal.Decimal):
            if isinstance(value, decimal.Decimal) and not value.is_finite():
                raise _Unfit(path, f"Decimal {value} is not a finite number")
            return str(value)
        if isinstance(value, set | frozenset):
            items = [self.convert(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
            try:
                return sorted(items)
            except TypeError:
                return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self.convert(dataclasses.asdict(value), path, depth)
        dump = getattr(value, "model_dump", None)  # pydantic v2 models
        if callable(dump):
            return self.convert(dump(mode="json"), path, depth)
        raise _Unfit(path, f"{kind.__name__} is not JSON serializable")


def _to_json(value: Any) -> Any:
    """A ``json.dumps(default=...)`` hook with the same conversions (``socket.send`` messages use it)."""
    plain = _Plain()
    try:
        converted = plain.convert(value, "$", 0)
    except _Unfit as exc:
        raise TypeError(exc.reason) from None
    if plain.tagged:  # a browser gets plain JSON: bytes have no form there
        raise TypeError(f"{type(value).__name__} holds bytes, which are not JSON serializable")
    return converted


def to_plain(payload: Any, *, queue: str) -> tuple[Any, bool]:
    """The payload as plain JSON values, and whether it holds tagged values. Raises PayloadError."""
    plain = _Plain()
    try:
        value = plain.convert(payload, "$", 0)
    except _Unfit as exc:
        raise PayloadError(f"queue {queue!r}: payload cannot be serialized: {exc}") from None
    except RecursionError:  # a model_dump/asdict of a self-referencing object
        raise PayloadError(f"queue {queue!r}: payload cannot be serialized: it refers to itself") from None
    if plain.tagged and plain.reserved_key_at is not None:
        raise PayloadError(
            f"queue {queue!r}: payload cannot be serialized: {plain.reserved_key_at} has the key {_TAG!r}, "
            "reserved for bytes and files in the same payload"
        )
    return value, plain.tagged


def encode(payload: Any, *, queue: str) -> tuple[bytes, str]:
    """Serialize a payload to (data, content type). Raises PayloadError naming the queue, path and type."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload), BYTES
    if isinstance(payload, str):
        return _utf8(payload, "$", queue), TEXT
    value, tagged = to_plain(payload, queue=queue)
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except ValueError as exc:  # NaN or infinity: JSON has no such numbers
        raise PayloadError(f"queue {queue!r}: payload cannot be serialized: {exc}") from None
    return _utf8(text, None, queue, value), (TAGGED_JSON if tagged else JSON)


def _utf8(text: str, path: str | None, queue: str, value: Any = None) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        where = path or _surrogate_path(value, "$") or "$"
        raise PayloadError(
            f"queue {queue!r}: payload cannot be serialized: {where} holds a lone surrogate (not valid Unicode)"
        ) from None


def _surrogate_path(value: Any, path: str) -> str | None:
    """Where in plain JSON values a string with a lone surrogate is (for the error message)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _surrogate_path(key, f"{path} (a key)") or _surrogate_path(item, _key(path, key))
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{i}]")
            if found:
                return found
    return None


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
