"""What a failed Pub/Sub publish attempt means for the job: the pure part of publishing.

Every attempt is one RPC with a deadline and no retry inside the client (``retry=None``): with
message ordering on, google-cloud-pubsub turns any retry it is given into an infinite one
(``publish()`` sets the deadline to 2**32 s), so a push that had already raised would still be
published minutes later. The push does its own retrying, with ``google.api_core.retry.Retry`` and
a deadline, and only of attempts that certainly queued nothing.
"""

from __future__ import annotations

import concurrent.futures
from enum import Enum
from typing import Final

# The client cancels the later messages of an ordering key after one fails; none of them was sent.
_CANCELLED_UNSENT: Final = ("prior ordered message for the same key has failed",)


class Verdict(Enum):
    RETRY = "retry"  # certainly not queued, and may succeed if tried again soon
    FAILED = "failed"  # certainly not queued; trying again will not help
    UNKNOWN = "unknown"  # the request may have reached Pub/Sub: the job may be queued


def classify(error: BaseException) -> Verdict:
    """The verdict on one failed publish attempt."""
    from google.api_core import exceptions as gexc
    from google.cloud.pubsub_v1.publisher.exceptions import PublishToPausedOrderingKeyException

    if isinstance(error, gexc.ServiceUnavailable | PublishToPausedOrderingKeyException):
        # UNAVAILABLE: the channel could not reach Pub/Sub, or Pub/Sub refused the request before
        # acting on it (Google's own client retries publishes on it for the same reason).
        return Verdict.RETRY
    if isinstance(error, RuntimeError) and any(text in str(error) for text in _CANCELLED_UNSENT):
        return Verdict.RETRY
    if isinstance(error, gexc.DeadlineExceeded | gexc.Unknown | gexc.InternalServerError | gexc.Aborted):
        return Verdict.UNKNOWN  # sent, and no answer: Pub/Sub may have accepted it
    if isinstance(error, concurrent.futures.TimeoutError | TimeoutError | gexc.Cancelled):
        return Verdict.UNKNOWN
    return Verdict.FAILED


def describe(error: BaseException) -> str:
    """A one-line account of the error, never empty (a TimeoutError's own text is)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
