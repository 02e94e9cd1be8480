"""The wire form of a job: payload bytes plus Pub/Sub-sized attributes, the same on every backend.

Everything the consumer needs travels in attributes, because the emulator's push body carries
neither ``orderingKey`` nor ``deliveryAttempt``. Limits are Pub/Sub's, checked here at push so a
job that would fail in production fails locally too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import payload as payload_codec
from .errors import PayloadError, PayloadTooLargeError, UndecodableJobError
from .metadata import JobMetadata

MAX_MESSAGE_BYTES: Final = 10_000_000  # Pub/Sub: data + attributes + ordering key per message
MAX_ATTRIBUTES: Final = 100
MAX_ATTRIBUTE_KEY_BYTES: Final = 256
MAX_ATTRIBUTE_VALUE_BYTES: Final = 1024
MAX_ORDERING_KEY_BYTES: Final = 1024

A_CONTENT_TYPE: Final = "qr-content-type"
A_QUEUE: Final = "qr-queue"
A_GROUP: Final = "qr-group"
A_DEDUPE: Final = "qr-dedupe"
A_USER: Final = "qr-user"
A_QUEUED_AT: Final = "qr-queued-at"
A_SEQUENCE: Final = "qr-seq"
A_PARAM_PREFIX: Final = "qr-param-"  # one attribute per param keeps each under 1024 bytes
# What messages call each attribute: the user never wrote "qr-dedupe", they wrote .dedupe(id).
_FIELD: Final = {A_DEDUPE: "dedupe id", A_USER: "user id", A_GROUP: "group id", A_QUEUE: "queue name"}


@dataclass(frozen=True)
class OutgoingJob:
    """A serialized job, validated against Pub/Sub's limits, ready for a backend to queue."""

    queue: str
    data: bytes
    content_type: str
    queued_at: dt.datetime
    group_id: str | None = None
    dedupe_id: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None

    def attributes(self, sequence_number: int | None = None) -> dict[str, str]:
        attrs = {
            A_CONTENT_TYPE: self.content_type,
            A_QUEUE: self.queue,
            A_QUEUED_AT: self.queued_at.isoformat(),
        }
        if self.group_id is not None:
            attrs[A_GROUP] = self.group_id
        if self.dedupe_id is not None:
            attrs[A_DEDUPE] = self.dedupe_id
        if self.user is not None:
            attrs[A_USER] = self.user
        if sequence_number is not None:
            attrs[A_SEQUENCE] = str(sequence_number)
        for key, value in self.params.items():
            attrs[A_PARAM_PREFIX + key] = value
        return attrs


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def build_job(
    queue: str,
    payload: Any,
    *,
    group_id: str | None,
    dedupe_id: str | None,
    params: Mapping[str, Any] | None,
    user: str | None,
    now: dt.datetime | None = None,
) -> OutgoingJob:
    """Serialize and check one job. Raises PayloadError naming the queue, field and value."""
    data, content_type = payload_codec.encode(payload, queue=queue)
    clean_params: dict[str, str] = {}
    for key, value in (params or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise PayloadError(f"queue {queue!r}: params must map str to str, got {key!r}: {value!r}")
        clean_params[key] = value
    job = OutgoingJob(
        queue=queue,
        data=data,
        content_type=content_type,
        queued_at=now or dt.datetime.now(dt.UTC),
        group_id=group_id,
        dedupe_id=dedupe_id,
        params=clean_params,
        user=user,
    )
    check_limits(job)
    return job


def _field_name(key: str) -> str:
    """What a user calls the value of attribute ``key``: not our attribute names."""
    if key.startswith(A_PARAM_PREFIX):
        return f"param {key[len(A_PARAM_PREFIX) :]!r}"
    return _FIELD.get(key, key)


def check_limits(job: OutgoingJob) -> None:
    q = job.queue
    attrs = job.attributes(sequence_number=2**63)  # sized with the largest sequence a backend may add
    for key, value in attrs.items():
        for text in (key, value):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # Pub/Sub attributes are UTF-8: a lone surrogate cannot travel
                raise PayloadError(
                    f"queue {q!r}: {_field_name(key)} is not valid Unicode (it holds a lone surrogate)"
                ) from None
    if job.group_id is not None and _utf8_len(job.group_id) > MAX_ORDERING_KEY_BYTES:
        raise PayloadError(
            f"queue {q!r}: group id is {_utf8_len(job.group_id)} bytes; Pub/Sub ordering keys are at most "
            f"{MAX_ORDERING_KEY_BYTES} bytes (group id {job.group_id[:40]!r}...)"
        )
    if len(attrs) > MAX_ATTRIBUTES:
        raise PayloadError(
            f"queue {q!r}: {len(job.params)} params make {len(attrs)} message attributes; Pub/Sub allows "
            f"{MAX_ATTRIBUTES} (params {sorted(job.params)[:5]!r}...)"
        )
    for key, value in attrs.items():
        field_name = _field_name(key)
        if _utf8_len(key) > MAX_ATTRIBUTE_KEY_BYTES:
            raise PayloadError(
                f"queue {q!r}: {field_name} name is {_utf8_len(key)} bytes as an attribute key; "
                f"Pub/Sub allows {MAX_ATTRIBUTE_KEY_BYTES}"
            )
        if _utf8_len(value) > MAX_ATTRIBUTE_VALUE_BYTES:
            raise PayloadError(
                f"queue {q!r}: {field_name} is {_utf8_len(value)} bytes; Pub/Sub attribute values are at most "
                f"{MAX_ATTRIBUTE_VALUE_BYTES} bytes (value {value[:40]!r}...)"
            )
    size = len(job.data) + sum(_utf8_len(k) + _utf8_len(v) for k, v in attrs.items())
    size += _utf8_len(job.group_id or "")
    if size > MAX_MESSAGE_BYTES:
        raise PayloadTooLargeError(
            f"queue {q!r}: payload is {len(job.data):,} bytes ({size:,} with attributes); Pub/Sub messages are "
            f"at most {MAX_MESSAGE_BYTES:,} bytes"
        )


@dataclass(frozen=True)
class ReceivedJob:
    """A delivery of one job, as any backend hands it to the runner."""

    job_id: str
    data: bytes
    attributes: Mapping[str, str]
    received_count: int
    sequence_number: int | None = None
    published_at: dt.datetime | None = None

    @property
    def queue(self) -> str:
        return self.attributes.get(A_QUEUE, "")

    @property
    def group_id(self) -> str | None:
        return self.attributes.get(A_GROUP)

    @property
    def content_type(self) -> str:
        return self.attributes.get(A_CONTENT_TYPE, payload_codec.JSON)

    def payload(self) -> Any:
        return payload_codec.decode(self.data, self.content_type)

    def decode(self, queue_name: str, *, fifo: bool) -> tuple[Any, JobMetadata]:
        """The job's payload and metadata, or :class:`UndecodableJobError` saying why there is none.

        A message without queuerun's attributes (published by another tool) is a job whose data is
        JSON (the default content type), queued at its publish time, with no user and no params; on
        a FIFO queue it must carry the group in the ``qr-group`` attribute (the ordering key alone
        is not enough: the emulator does not deliver it). Anything else that fails to decode, with
        whatever exception (``RecursionError`` for deeply nested JSON, ``TypeError`` for tagged JSON
        of the wrong type), is the same verdict: the bytes will not change on redelivery, so the
        message is dead-lettered at once instead of retried.
        """
        try:
            if fifo and self.group_id is None:
                raise ValueError(f"a job of a FIFO queue needs the {A_GROUP} attribute (its group id)")
            meta = self.metadata(queue_name)
            payload = self.payload()
        except MemoryError:
            raise  # this process's state, not the message's: let it be retried
        except Exception as exc:  # untrusted bytes: any decoder error means the message is unusable
            reason = str(exc)
            reason = reason if len(reason) <= 300 else reason[:300] + "..."
            raise UndecodableJobError(
                f"queue {queue_name!r}: message {self.job_id} cannot become a job: {type(exc).__name__}: {reason}"
            ) from exc
        return payload, meta

    def metadata(self, queue_name: str) -> JobMetadata:
        queued_raw = self.attributes.get(A_QUEUED_AT)
        try:
            queued_at = dt.datetime.fromisoformat(queued_raw) if queued_raw else self.published_at
        except ValueError:
            raise ValueError(f"attribute {A_QUEUED_AT} is not an ISO 8601 time: {str(queued_raw)[:40]!r}") from None
        seq = self.sequence_number
        if seq is None and A_SEQUENCE in self.attributes:
            raw = self.attributes[A_SEQUENCE]
            try:
                seq = int(raw)
            except ValueError:
                raise ValueError(f"attribute {A_SEQUENCE} is not a number: {raw[:40]!r}") from None
        group = self.group_id
        return JobMetadata(
            job_id=self.job_id,
            queue_name=queue_name,
            queued_at=queued_at or dt.datetime.now(dt.UTC),
            received_count=self.received_count,
            group_id=group,
            sequence_number=seq if group is not None else None,
            params={k[len(A_PARAM_PREFIX) :]: v for k, v in self.attributes.items() if k.startswith(A_PARAM_PREFIX)},
            user=self.attributes.get(A_USER),
        )


def dumps_attributes(attrs: Mapping[str, str]) -> str:
    return json.dumps(dict(attrs), sort_keys=True)
