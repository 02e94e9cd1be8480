"""Limits on untrusted input, and the cheap checks that enforce them before any costly work.

A request body is bounded in bytes (``App(http_max_body=...)``), but bytes are not the cost: a
5 MiB JSON array of empty objects becomes ~1.7 million dicts (hundreds of MiB), a multipart body of
empty parts becomes 100k+ parse steps. So the shape of a body is bounded too, and checked with
byte scans (C speed, no Python object per element) *before* it is parsed. The same depth limit
applies to every payload at push, so a payload ``push()`` accepts always decodes on delivery.

Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Final

# Nesting of JSON arrays/objects, in a body and in a pushed payload. json.loads recurses in C
# and stops at the interpreter's recursion limit (1000 frames, fewer the deeper the caller already
# is): 64 keeps every accepted payload far from that on any stack a worker decodes it on.
MAX_DEPTH: Final = 64
# Values in one JSON body (array items, object members, containers). About 1 KiB of Python objects
# at worst per value (an object holding a float); with 100k a body stays under ~25 MiB parsed.
MAX_JSON_ITEMS: Final = 100_000
# Fields in a url-encoded form, parts in a multipart form (Django's default is 1000 fields).
MAX_FORM_FIELDS: Final = 1_000
MAX_MULTIPART_PARTS: Final = 1_000
# Bytes of the headers of one multipart part: a name, a filename and a type fit easily.
MAX_PART_HEADER_BYTES: Final = 16 * 1024

# A user id is a Pub/Sub attribute value (qr-user: at most 1024 bytes, cloud.google.com/pubsub/quotas
# "Resource limits") and an indexed Firestore field of socket presence documents (at most 1500
# bytes, longer values are truncated in the index and queries on them become inconsistent:
# cloud.google.com/firestore/quotas, "Collections, documents, and fields" and "Indexes"). The
# smaller of the two bounds it.
MAX_USER_ID_BYTES: Final = 1024

# A JSON string once its escaped characters are gone: no backslash case, so the regex engine never
# backtracks, and an unterminated string fails once (one scan), not once per later quote.
_PLAIN_STRING: Final = re.compile(rb'"[^"]*"')
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")
_AS_SQUARE: Final = bytes.maketrans(b"{}", b"[]")  # one bracket kind: "{[]}" must take two passes, not one


def _unescaped(data: bytes) -> bytes:
    """The text without its escapes, removed left to right as a JSON parser reads them: ``\\\\``
    pairs, then ``\\"``. Every quote left opens or closes a string. (A regex for strings with escapes
    in them took time quadratic in the body for ``["\\"\\"\\"...``: 66 s for 80 KB.)"""
    return data.replace(b"\\\\", b"").replace(b'\\"', b"")


def _skeleton(unescaped: bytes) -> bytes:
    """The text without its strings: brackets, commas, colons and scalars only."""
    return _PLAIN_STRING.sub(b"", unescaped)


def _depth(skeleton: bytes, limit: int) -> int | None:
    brackets = skeleton.translate(_AS_SQUARE, _NOT_BRACKET)
    depth = 0
    while brackets:
        if depth >= limit:
            return None
        reduced = brackets.replace(b"[]", b"")
        if len(reduced) == len(brackets):
            return depth  # unbalanced: not JSON, let the parser say so
        brackets = reduced
        depth += 1
    return depth


def _items(skeleton: bytes) -> int:
    return skeleton.count(b",") + skeleton.count(b"[") + skeleton.count(b"{") + 1


def json_depth(data: bytes, limit: int = MAX_DEPTH) -> int | None:
    """Nesting depth of a JSON text, or None if it is deeper than ``limit``.

    Removes innermost bracket pairs once per level, with ``bytes.replace``: at most
    ``limit + 1`` C-speed passes, never a Python step per character. Unbalanced text (not JSON)
    reports the depth it reached; the JSON parser then rejects it with its own message.
    """
    return _depth(_skeleton(_unescaped(data)), limit)


def json_items(data: bytes) -> int:
    """An upper bound on the values a JSON text holds (commas, containers and one), from byte counts."""
    return _items(_skeleton(_unescaped(data)))


def json_problem(data: bytes) -> str | None:
    """Why a JSON body is too costly to parse (too many values, too deep), or None.

    Byte counts and C-speed passes only: these run while holding the GIL, so in a worker thread
    they still pause the event loop; each is linear and bounded before the next, costlier one.
    """
    unescaped = _unescaped(data)
    strings = unescaped.count(b'"') // 2  # every string is a value or a key: at most two per value
    if strings > 2 * MAX_JSON_ITEMS:
        return f"holds {strings:,} strings; at most {MAX_JSON_ITEMS:,} values are accepted"
    skeleton = _skeleton(unescaped)
    items = _items(skeleton)
    if items > MAX_JSON_ITEMS:
        return f"holds about {items:,} values; at most {MAX_JSON_ITEMS:,} are accepted"
    if _depth(skeleton, MAX_DEPTH) is None:
        return f"is nested deeper than {MAX_DEPTH} levels"
    return None


def id_problem(field: str, value: object, *, max_bytes: int | None = None, show: bool = True) -> str | None:
    """Why ``value`` cannot be an id (group, dedupe, user): not a non-empty valid Unicode string, or too long.

    ``show=False`` keeps the value out of the message (a user id from a hook goes to logs only).
    """
    shown = f" {_brief(value)}" if show else ""
    if not isinstance(value, str) or not value:
        return f"{field} must be a non-empty string, got {type(value).__name__}{shown}"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return f"{field}{shown} is not valid Unicode (lone surrogate at index {exc.start})"
    if max_bytes is not None and size > max_bytes:
        return f"{field} is {size:,} bytes in UTF-8; at most {max_bytes:,}" + (f" (starts{shown})" if show else "")
    return None


def _brief(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
