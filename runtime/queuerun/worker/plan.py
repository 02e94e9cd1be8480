"""How the pull worker consumes one queue, projected from its spec (pure: no Google import).

Flow control and lease management are the client library's own (``FlowControl``,
``SubscriberClient.subscribe``): it counts outstanding messages, extends every lease it holds
(sized on the observed processing time, at most 600 s per extension) until the message is acked,
nacked or ``max_lease_duration`` passes, holds back later messages of an ordering key until the
one before is settled, retries transient acknowledgement errors on exactly-once subscriptions,
and drops a message whose lease could not be extended there. Writing that again would repeat the
library's edge cases, not improve on them; the worker only bounds it from the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..spec import QueueSpec

# Cloud Run sends SIGTERM and, 10 s later, SIGKILL (cloud.google.com/run/docs/container-contract,
# "Instance shutdown"; worker pools follow the same contract). The worker stops pulling at once,
# lets jobs finish for this long, then nacks what is still running, within the 10 s.
SHUTDOWN_GRACE: Final = 8.0
LEASE_MARGIN: Final = 30.0  # beyond the timeout: the settling (ack, records) after a handler returns
# A FIFO queue leases more messages than it runs, so a group whose later jobs are held back
# behind its head does not stop other groups from being delivered.
FIFO_LEASE_FACTOR: Final = 10
MAX_LEASED: Final = 1000  # the library's own default for max_messages


@dataclass(frozen=True)
class PullPlan:
    """The streaming pull settings of one queue."""

    queue: str
    runners: int  # handler calls at once: the subscriber's scheduler threads (concurrency)
    max_messages: int  # leased at once (FlowControl.max_messages)
    max_lease_duration: float  # FlowControl.max_lease_duration, seconds
    retry_in_process: bool  # FIFO: retry a failed job here, holding its group (see pull.py)


def fifo_hold(spec: QueueSpec) -> float:
    """Longest time a FIFO job is held: every attempt run to its timeout, with the backoffs between."""
    attempts = spec.max_attempts
    return attempts * spec.timeout + sum(spec.backoff(n) for n in range(1, attempts))


def pull_plan(spec: QueueSpec) -> PullPlan:
    """Bounds for ``spec``'s subscriber: ``concurrency`` jobs at once, leases held up to the timeout."""
    if spec.fifo:
        return PullPlan(
            queue=spec.name,
            runners=spec.concurrency,
            max_messages=min(MAX_LEASED, spec.concurrency * FIFO_LEASE_FACTOR),
            max_lease_duration=fifo_hold(spec) + LEASE_MARGIN,
            retry_in_process=True,
        )
    return PullPlan(
        queue=spec.name,
        runners=spec.concurrency,
        max_messages=spec.concurrency,
        max_lease_duration=spec.timeout + LEASE_MARGIN,
        retry_in_process=False,
    )
