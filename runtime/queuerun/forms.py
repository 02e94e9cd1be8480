"""Turning an HTTP request body into a job payload, by content type. Pure: bytes in, payload out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

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
    """The payload a request body stands for. Raises RequestRejected with the status to answer."""
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
            return json.loads(body.decode(charset))
        if kind == "text/plain":
            return body.decode(charset)
        if kind == "application/x-www-form-urlencoded":
            if body.lstrip()[:1] in (b"{", b"["):  # curl -d '{...}' sends JSON with the form type
                raise RequestRejected(
                    400,
                    f"queue {queue!r}: the body looks like JSON but arrived as a form "
                    "(Content-Type: application/x-www-form-urlencoded, curl's default for -d); "
                    "send it with Content-Type: application/json",
                )
            fields = parse_qs(body.decode(charset), keep_blank_values=True, strict_parsing=True)
            return {k: _one_or_many(v) for k, v in fields.items()}
    except json.JSONDecodeError as exc:
        raise RequestRejected(400, f"queue {queue!r}: malformed JSON body: {exc}") from None
    except (UnicodeDecodeError, LookupError) as exc:
        raise RequestRejected(400, f"queue {queue!r}: body is not valid {charset!r} text: {exc}") from None
    except ValueError as exc:  # parse_qs(strict_parsing=True)
        raise RequestRejected(400, f"queue {queue!r}: malformed form body: {exc}") from None
    return _parse_multipart(queue, content_type or "", body)


def _parse_multipart(queue: str, content_type: str, body: bytes) -> dict[str, Any]:
    if "boundary=" not in content_type:
        raise RequestRejected(400, f"queue {queue!r}: multipart/form-data without a boundary parameter")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    parts = list(message.iter_parts()) if message.is_multipart() else []
    if not parts or message.defects:
        raise RequestRejected(400, f"queue {queue!r}: malformed multipart/form-data body")
    fields: dict[str, list[Any]] = {}
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            raise RequestRejected(400, f"queue {queue!r}: a multipart part has no field name")
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            # Files are kept whole; queue-run serialized them to {} and lost them.
            value: Any = UploadedFile(filename, part.get_content_type(), data)
        else:
            charset = part.get_content_charset() or "utf-8"
            try:
                value = data.decode(charset)
            except (UnicodeDecodeError, LookupError):
                raise RequestRejected(400, f"queue {queue!r}: field {name!r} is not valid {charset!r} text") from None
        fields.setdefault(name, []).append(value)
    return {k: _one_or_many(v) for k, v in fields.items()}
