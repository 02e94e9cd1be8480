"""The verdict on a failed publish attempt decides whether a push may be retried, failed, or unknown."""

from __future__ import annotations

import concurrent.futures

import pytest
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1.publisher.exceptions import PublishToPausedOrderingKeyException

from queuerun.backends.publish_outcome import Verdict, classify, describe


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (gexc.ServiceUnavailable("failed to connect to all addresses"), Verdict.RETRY),
        (PublishToPausedOrderingKeyException("g"), Verdict.RETRY),
        (
            RuntimeError(
                "Batch cancelled because prior ordered message for the same key has failed. This batch has been "
                "cancelled to avoid out-of-order publish."
            ),
            Verdict.RETRY,
        ),
        (gexc.DeadlineExceeded("Deadline Exceeded"), Verdict.UNKNOWN),
        (concurrent.futures.TimeoutError(), Verdict.UNKNOWN),
        (gexc.InternalServerError("boom"), Verdict.UNKNOWN),
        (gexc.PermissionDenied("no"), Verdict.FAILED),
        (gexc.InvalidArgument("too big"), Verdict.FAILED),
        (RuntimeError("Cannot publish on a stopped publisher."), Verdict.FAILED),
    ],
)
def test_verdicts(error: BaseException, verdict: Verdict) -> None:
    assert classify(error) is verdict


def test_an_error_without_text_is_still_described() -> None:
    assert describe(concurrent.futures.TimeoutError()) == "TimeoutError"
    assert describe(ValueError("bad")) == "ValueError: bad"
