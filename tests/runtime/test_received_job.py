"""Turning a delivered message into a job: every message that cannot become one says why, once."""

from __future__ import annotations

import datetime as dt

import pytest

from queuerun.errors import UndecodableJobError
from queuerun.wire import ReceivedJob

PUBLISHED = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
JSON_ATTRS = {"qr-content-type": "application/json", "qr-queue": "q"}
TAGGED = {**JSON_ATTRS, "qr-content-type": "application/vnd.queuerun+json"}


def received(data: bytes, attributes: dict[str, str]) -> ReceivedJob:
    return ReceivedJob("m1", data, attributes, received_count=1, published_at=PUBLISHED)


@pytest.mark.parametrize(
    ("data", "attributes", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, JSON_ATTRS, "RecursionError"),
        (b'{"$queuerun": "bytes", "base64": 5}', TAGGED, "TypeError"),
        (b'{"$queuerun": "bytes", "base64": "!!"}', TAGGED, "Error"),
        (b"not json", JSON_ATTRS, "not JSON"),
        (b"\xff\xfe", {**JSON_ATTRS, "qr-content-type": "text/plain; charset=utf-8"}, "UnicodeDecodeError"),
        (b"{}", {**JSON_ATTRS, "qr-content-type": "image/png"}, "unknown payload content type"),
        (b"{}", {**JSON_ATTRS, "qr-queued-at": "yesterday"}, "qr-queued-at"),
        (b"{}", {**JSON_ATTRS, "qr-group": "g", "qr-seq": "x1"}, "qr-seq"),
    ],
    ids=["deep-json", "tagged-wrong-type", "bad-b64", "bad-json", "bad-utf8", "content-type", "queued-at", "seq"],
)
def test_any_decoding_failure_is_one_error_naming_the_message_and_the_reason(
    data: bytes, attributes: dict[str, str], reason: str
) -> None:
    with pytest.raises(UndecodableJobError, match=reason) as caught:
        received(data, attributes).decode("q", fifo=False)
    assert "m1" in str(caught.value) and "'q'" in str(caught.value)
    assert len(str(caught.value)) < 1000  # it travels in a 1024-byte dead-letter attribute


def test_a_foreign_message_without_queuerun_attributes_is_a_json_job_queued_at_its_publish_time() -> None:
    payload, meta = received(b'{"order": 7}', {"origin": "other-tool"}).decode("q", fifo=False)
    assert payload == {"order": 7}
    assert (meta.queued_at, meta.group_id, meta.user, dict(meta.params)) == (PUBLISHED, None, None, {})


def test_a_foreign_message_whose_data_is_not_json_cannot_become_a_job() -> None:
    with pytest.raises(UndecodableJobError, match="not JSON"):
        received(b"hello from gcloud", {}).decode("q", fifo=False)


def test_a_fifo_message_without_a_group_cannot_become_a_job() -> None:
    with pytest.raises(UndecodableJobError, match="qr-group"):
        received(b"{}", JSON_ATTRS).decode("q.fifo", fifo=True)
    payload, meta = received(b"{}", {**JSON_ATTRS, "qr-group": "g", "qr-seq": "5"}).decode("q.fifo", fifo=True)
    assert (payload, meta.group_id, meta.sequence_number) == ({}, "g", 5)
