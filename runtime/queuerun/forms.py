"""Turning an HTTP request body into a job payload, by content type. Pure: bytes in, payload out."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from email.message import Message
from typing import Any
from urllib.parse import parse_qs

from . import limits
from .errors import RequestRejected
from .payload import UploadedFile
from .spec import HTTP_CONTENT_TYPES


def media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """``"text/plain; charset=latin-1"`` -> ``("text/plain", {"charset": "latin-1"})``."""
    if not header:
        return "", {}
    msg = Message()
    msg["content-type"] = header
    pairs = msg.get_params() or []
    params = {k.lower(): v for k, v in pairs[1:]}
    return msg.get_content_type().lower(), params


def _one_or_many(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def parse_body(queue: str, content_type: str | None, body: bytes, accepts: Sequence[str] = HTTP_CONTENT_TYPES) -> Any:
    """The payload a request body stands for. Raises RequestRejected with the status to answer.

    Every content type's cost is bounded before parsing (see :mod:`queuerun.limits`): a body over
    a limit is refused with 413 and the limit named, without building its objects.
    """
    kind, params = media_type(content_type)
    if not kind:
        raise RequestRejected(415, f"queue {queue!r}: request has no Content-Type; send one of {list(accepts)}")
    if kind not in accepts:
        raise RequestRejected(
            415, f"queue {queue!r}: Content-Type {kind!r} is not accepted; send one of {list(accepts)}"
        )
    if not body:
        raise RequestRejected(422, f"queue {queue!r}: the request body is empty ({kind})")
    charset = params.get("charset", "utf-8")
    if kind == "application/octet-stream":
        return body
    try:
        if kind == "application/json":
            return _parse_json(queue, body, charset)
        if kind == "text/plain":
            return body.decode(charset)
        if kind == "application/x-www-form-urlencoded":
            return _parse_urlencoded(queue, body, charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise RequestRejected(400, f"queue {queue!r}: body is not valid {charset!r} text: {exc}") from None
    return _parse_multipart(queue, params.get("boundary"), body)


def _parse_json(queue: str, body: bytes, charset: str) -> Any:
    text = body.decode(charset)
    # The byte scans read UTF-8; any other charset is scanned in its UTF-8 form.
    scanned = body if charset.lower().replace("_", "-") in ("utf-8", "utf8") else text.encode("utf-8", "surrogatepass")
    problem = limits.json_problem(scanned)
    if problem is not None:
        raise RequestRejected(413, f"queue {queue!r}: the JSON body {problem}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestRejected(400, f"queue {queue!r}: malformed JSON body: {exc}") from None
    except RecursionError:  # the depth check bounds nesting; this is a backstop, never a traceback
        raise RequestRejected(413, f"queue {queue!r}: the JSON body is nested too deep") from None


def _parse_urlencoded(queue: str, body: bytes, charset: str) -> dict[str, Any]:
    if body.lstrip()[:1] in (b"{", b"["):  # curl -d '{...}' sends JSON with the form type
        raise RequestRejected(
            400,
            f"queue {queue!r}: the body looks like JSON but arrived as a form "
            "(Content-Type: application/x-www-form-urlencoded, curl's default for -d); "
            "send it with Content-Type: application/json",
        )
    count = body.count(b"&") + 1
    if count > limits.MAX_FORM_FIELDS:
        raise RequestRejected(
            413, f"queue {queue!r}: the form has {count:,} fields; at most {limits.MAX_FORM_FIELDS:,} are accepted"
        )
    try:
        fields = parse_qs(body.decode(charset), keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:  # strict_parsing; UnicodeDecodeError is a ValueError too and is handled above
        if isinstance(exc, UnicodeDecodeError):
            raise
        raise RequestRejected(400, f"queue {queue!r}: malformed form body: {exc}") from None
    return {k: _one_or_many(v) for k, v in fields.items()}


_TOKEN = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")  # RFC 2046 boundary characters and length


def _parse_multipart(queue: str, boundary: str | None, body: bytes) -> dict[str, Any]:
    """A multipart/form-data body (RFC 7578), split with byte searches: one pass, parts counted first.

    The stdlib's email parser took 38 s and hundreds of MiB for 5 MiB of empty parts, and recursed
    into nested multiparts; here a part is a slice of the body, and a nested multipart is refused
    (RFC 7578 section 4.3 deprecates multipart/mixed inside form data).
    """
    if not boundary:
        raise RequestRejected(400, f"queue {queue!r}: multipart/form-data without a boundary parameter")
    if not _TOKEN.match(boundary) or boundary.endswith(" "):
        raise RequestRejected(400, f"queue {queue!r}: multipart boundary {boundary[:80]!r} is not valid (RFC 2046)")
    dash = b"--" + boundary.encode("ascii")
    count = body.count(dash) - 1  # the closing delimiter is not a part
    if count > limits.MAX_MULTIPART_PARTS:
        raise RequestRejected(
            413,
            f"queue {queue!r}: the multipart body has {count:,} parts; "
            f"at most {limits.MAX_MULTIPART_PARTS:,} are accepted",
        )
    malformed = RequestRejected(400, f"queue {queue!r}: malformed multipart/form-data body")
    if body.startswith(dash):
        pos = len(dash)
    else:
        first = body.find(b"\r\n" + dash)  # after a preamble
        if first < 0:
            raise malformed
        pos = first + 2 + len(dash)
    delimiter = b"\r\n" + dash
    fields: dict[str, list[Any]] = {}
    while not body.startswith(b"--", pos):  # "--" after a delimiter closes the body
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise malformed
        start = line_end + 2
        end = body.find(delimiter, start)
        if end < 0:
            raise malformed  # no closing delimiter: a truncated body is not a form
        name, value = _part(queue, body, start, end, malformed)
        fields.setdefault(name, []).append(value)
        pos = end + len(delimiter)
    if not fields:
        raise malformed
    return {k: _one_or_many(v) for k, v in fields.items()}


def _part(queue: str, body: bytes, start: int, end: int, malformed: RequestRejected) -> tuple[str, Any]:
    """One part between ``start`` and ``end``: its field name and value (str, or UploadedFile)."""
    if body.startswith(b"\r\n", start):
        head, data_start = b"", start + 2
    else:
        head_end = body.find(b"\r\n\r\n", start, min(end, start + limits.MAX_PART_HEADER_BYTES))
        if head_end < 0:
            raise malformed
        head, data_start = body[start:head_end], head_end + 4
    headers = Message()
    for line in head.split(b"\r\n"):
        key, colon, value = line.partition(b":")
        if not colon:
            raise malformed
        try:
            # RFC 7578 section 5.1: browsers send field names and file names as raw UTF-8.
            headers[key.decode("ascii").strip()] = value.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise RequestRejected(400, f"queue {queue!r}: a multipart part header is not valid UTF-8") from None
    name = headers.get_param("name", header="content-disposition")
    if not isinstance(name, str) or not name:
        raise RequestRejected(400, f"queue {queue!r}: a multipart part has no field name")
    part_type = headers.get_content_type()
    if part_type.startswith("multipart/"):
        raise RequestRejected(
            400, f"queue {queue!r}: field {name!r} is a nested {part_type}; send each file as its own part"
        )
    data = body[data_start:end]
    filename = headers.get_filename()
    if filename is not None:
        # Files are kept whole; queue-run serialized them to {} and lost them.
        return name, UploadedFile(filename, part_type, data)
    charset = headers.get_content_charset() or "utf-8"
    try:
        return name, data.decode(charset)
    except (UnicodeDecodeError, LookupError):
        raise RequestRejected(400, f"queue {queue!r}: field {name!r} is not valid {charset!r} text") from None
