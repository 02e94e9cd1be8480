"""A queue's Pub/Sub settings, projected from its spec once: for the Pulumi component and the emulator.

:func:`subscription_settings` is pure (no Google or Pulumi import): ``queuerun_gcp.QueueRunApp``
turns its result into Pulumi resources, :mod:`queuerun.emulator_topology` into emulator requests.
Where the emulator cannot do what production does, the emulator topology departs from these
settings through the overrides named in :data:`EMULATOR_GAPS`, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .names import dead_letter_subscription_id, dead_letter_topic_id, route_slug, subscription_id, topic_id
from .spec import QueueSpec

# Pub/Sub pushes each queue's jobs to ``{service url}{PUSH_PATH}{queue}``; the push server serves it.
PUSH_PATH: Final = "/_pubsub/"
# Pub/Sub's dead-letter policy accepts 5-100 delivery attempts
# (cloud.google.com/pubsub/docs/handling-failures#dead_letter_topic).
POLICY_MIN_ATTEMPTS: Final = 5
POLICY_MAX_ATTEMPTS: Final = 100
DEAD_LETTER_ACK_DEADLINE: Final = 60

# The emulator's known gaps, each an override ensure_topology applies (see its docstring):
EMULATOR_GAPS: Final = {
    # An ordered subscription with a dead-letter policy stalls on the emulator once a message reaches
    # its maximum attempts; the runtime dead-letters FIFO jobs itself, so the policy is left out.
    "fifo_dead_letter_policy": "no dead-letter policy on FIFO subscriptions",
}


def push_route(queue: str) -> str:
    """The path the push server serves ``queue``'s pushes on."""
    return PUSH_PATH + route_slug(queue)


def dead_letter_policy_attempts(max_attempts: int) -> int:
    """Pub/Sub's ``max_delivery_attempts`` for a queue: the backstop behind the runtime's own dead-lettering.

    The runtime dead-letters a job itself on its last attempt, so ``max_attempts`` may be 1-4 too;
    Pub/Sub accepts only 5-100, so such queues get 5: the policy then only catches what the runtime
    could not dead-letter (its server gone for good on the job's last attempts).
    """
    return min(POLICY_MAX_ATTEMPTS, max(POLICY_MIN_ATTEMPTS, max_attempts))


def duration(seconds: float) -> str:
    """A protobuf Duration in its JSON form: ``10s``, ``0.5s``."""
    return f"{float(seconds):g}s"


@dataclass(frozen=True)
class SubscriptionSettings:
    """Everything about one queue's topics and subscriptions, in Pub/Sub's terms."""

    queue: str
    topic_id: str
    subscription_id: str
    dead_letter_topic_id: str
    dead_letter_subscription_id: str
    push_route: str | None  # None: a pull subscription
    ack_deadline_seconds: int
    enable_message_ordering: bool
    enable_exactly_once_delivery: bool
    minimum_backoff: float  # seconds
    maximum_backoff: float
    max_delivery_attempts: int  # the dead-letter policy's
    dead_letter_ack_deadline_seconds: int = DEAD_LETTER_ACK_DEADLINE
    expires: bool = False  # an idle queue must not disappear


def subscription_settings(app_name: str, spec: QueueSpec) -> SubscriptionSettings:
    """The Pub/Sub settings of ``spec``'s queue in app ``app_name``."""
    push = spec.delivery == "push"
    return SubscriptionSettings(
        queue=spec.name,
        topic_id=topic_id(app_name, spec.name),
        subscription_id=subscription_id(app_name, spec.name),
        dead_letter_topic_id=dead_letter_topic_id(app_name, spec.name),
        dead_letter_subscription_id=dead_letter_subscription_id(app_name, spec.name),
        push_route=push_route(spec.name) if push else None,
        ack_deadline_seconds=spec.ack_deadline,
        enable_message_ordering=spec.fifo,
        # Pub/Sub never delivers push exactly once; FIFO push relies on Firestore completion records.
        enable_exactly_once_delivery=bool(spec.exactly_once) and not push,
        minimum_backoff=float(spec.min_backoff),
        maximum_backoff=float(spec.max_backoff),
        max_delivery_attempts=dead_letter_policy_attempts(spec.max_attempts),
    )
