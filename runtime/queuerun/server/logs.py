"""JSON log lines that Cloud Logging understands (one object per line on stdout).

Cloud Run forwards stdout to Cloud Logging, which reads ``severity`` and ``message`` and links a
line to its request trace through ``logging.googleapis.com/trace``
(https://cloud.google.com/logging/docs/structured-logging). Job fields (queue, job id, ...) are
passed with ``extra=`` and become top-level keys, so they can be filtered on (``jsonPayload.queue``).

A record logged with an exception carries its Python traceback in ``stack_trace``: Error Reporting
reads a ``jsonPayload`` field named ``stack_trace`` (first, before ``exception`` and ``message``)
and groups the entries by that trace
(https://cloud.google.com/error-reporting/docs/formatting-error-messages). The message stays the
one-line description.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, Final, TextIO

TRACE_KEY: Final = "logging.googleapis.com/trace"
SPAN_KEY: Final = "logging.googleapis.com/spanId"
SAMPLED_KEY: Final = "logging.googleapis.com/trace_sampled"
TRACE_HEADER: Final = "x-cloud-trace-context"

# Extra attributes copied to the JSON line when a log call sets them.
FIELDS: Final = ("queue", "job_id", "group_id", "attempt", "status", "duration_ms", "error", "path", "http_status")
_TRACE_FIELDS: Final = {"trace": TRACE_KEY, "span_id": SPAN_KEY, "trace_sampled": SAMPLED_KEY}

_SEVERITY: Final = {"WARNING": "WARNING", "WARN": "WARNING", "FATAL": "CRITICAL"}


def trace_fields(header: str | None, project: str | None) -> dict[str, Any]:
    """``extra`` fields from an ``X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1`` header (empty if absent or bad)."""
    if not header or not project:
        return {}
    trace_part, _, options = header.partition(";")
    trace_id, _, span_id = trace_part.partition("/")
    trace_id = trace_id.strip()
    if not trace_id or len(trace_id) > 64 or not all(c in "0123456789abcdefABCDEF" for c in trace_id):
        return {}
    fields: dict[str, Any] = {"trace": f"projects/{project}/traces/{trace_id}"}
    span_id = span_id.strip()
    if span_id.isdigit() and len(span_id) <= 20:
        fields["span_id"] = format(int(span_id), "016x")  # the header gives it in decimal, Logging wants hex
    if options.strip() == "o=1":
        fields["trace_sampled"] = True
    return fields


class CloudLoggingFormatter(logging.Formatter):
    """Formats a record as one JSON object with ``severity``, ``message``, ``time`` and job fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, record.levelname),
            "message": message,
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat().replace("+00:00", "Z"),
            "logger": record.name,
        }
        if record.exc_info:
            line["stack_trace"] = self.formatException(record.exc_info)
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        for name, key in _TRACE_FIELDS.items():
            value = record.__dict__.get(name)
            if value is not None:
                line[key] = value
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stdout) as Cloud Logging JSON. Idempotent."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler.formatter, CloudLoggingFormatter):
            return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    root.addHandler(handler)
    root.setLevel(level)
