"""What an exactly-once acknowledgement's failure means, by its documented status (pure).

With exactly-once delivery, ``Message.ack_with_response()`` returns a future that raises
``AcknowledgeError`` when Pub/Sub did not take the acknowledgement; the client library has already
retried the transient causes (google-cloud-pubsub 2.11.0: "retry temporary GRPC statuses for
ack/modack/nack when exactly-once delivery is enabled"). What is left is permanent for that ack id,
and Google's guide (cloud.google.com/pubsub/docs/exactly-once-delivery) says the message may then
be delivered again: "use the information about the progress of processing a message to prevent
duplicate work when an acknowledgment fails". The worker keeps that information as the job's
completion record, written before the ack, so the redelivery is acknowledged without running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass(frozen=True)
class AckFailure:
    level: int
    meaning: str


_FAILURES = {
    # A newer delivery of the message exists (its lease lapsed, or it was nacked): only the latest
    # ack id may acknowledge it. The redelivery finds the completion record and is acked.
    "INVALID_ACK_ID": AckFailure(
        logging.WARNING,
        "the ack id is no longer valid (the lease lapsed or the message was delivered again); the new delivery "
        "finds the job's completion record and is acknowledged without running it",
    ),
    "PERMISSION_DENIED": AckFailure(
        logging.ERROR,
        "the worker's service account may not acknowledge on this subscription (it needs "
        "roles/pubsub.subscriber on it); Pub/Sub will deliver the job again",
    ),
    "FAILED_PRECONDITION": AckFailure(
        logging.ERROR,
        "Pub/Sub refused the acknowledgement (failed precondition: e.g. the subscription changed); "
        "Pub/Sub will deliver the job again",
    ),
}
_OTHER = AckFailure(logging.ERROR, "Pub/Sub did not take the acknowledgement; it may deliver the job again")


def ack_failure(status: str) -> AckFailure:
    """How to report an ``AcknowledgeStatus`` (by name) other than SUCCESS."""
    return _FAILURES.get(status, _OTHER)
