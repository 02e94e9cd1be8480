"""Create an app's topics and subscriptions on the Pub/Sub emulator, from its queue declarations.

The same declarations the Pulumi components read: per queue a topic, a push subscription to
``<push_base_url>/_pubsub/<queue>`` (ordering on for FIFO, ack deadline and retry policy from the
spec), a dead-letter topic and its pull subscription. Idempotent: on a second run existing
resources are kept and push subscriptions are pointed at the new URL (a dev server on a new port).

The emulator cannot combine message ordering with a dead-letter policy (the subscription stalls
once a message reaches its maximum attempts: see the reference notes), so on FIFO queues the
policy is left out by default. The push server still dead-letters a FIFO job itself after
``max_attempts`` failed deliveries it counted, so the group moves on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .names import dead_letter_subscription_id, dead_letter_topic_id, subscription_id, topic_id
from .spec import QueueSpec

if TYPE_CHECKING:
    from .app import App

PUSH_PATH = "/_pubsub/"


@dataclass(frozen=True)
class QueueTopology:
    queue: str
    topic: str
    subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str
    push_endpoint: str


def push_endpoint(push_base_url: str, queue: str) -> str:
    return push_base_url.rstrip("/") + PUSH_PATH + queue


def ensure_topology(
    app: App | None = None,
    *,
    project: str,
    push_base_url: str,
    emulator_host: str,
    app_name: str | None = None,
    specs: Iterable[QueueSpec] | None = None,
    dead_letter_on_fifo: bool = False,
    oidc_service_account: str | None = None,
    oidc_audience: str | None = None,
) -> list[QueueTopology]:
    """Create (or update) every queue's resources on the emulator at ``emulator_host``."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud.pubsub_v1 import types
    from google.protobuf import duration_pb2

    from .backends.gcp import make_publisher, make_subscriber

    name = app_name or (app.name if app is not None else None)
    queue_specs = list(specs if specs is not None else (app.specs if app is not None else ()))
    if name is None:
        raise ValueError("ensure_topology needs an app or app_name")
    publisher = make_publisher(emulator_host=emulator_host)
    subscriber = make_subscriber(emulator_host=emulator_host)
    out: list[QueueTopology] = []
    try:
        for spec in queue_specs:
            topic = f"projects/{project}/topics/{topic_id(name, spec.name)}"
            dlq_topic = f"projects/{project}/topics/{dead_letter_topic_id(name, spec.name)}"
            sub = f"projects/{project}/subscriptions/{subscription_id(name, spec.name)}"
            dlq_sub = f"projects/{project}/subscriptions/{dead_letter_subscription_id(name, spec.name)}"
            endpoint = push_endpoint(push_base_url, spec.name)
            for path in (topic, dlq_topic):
                with contextlib.suppress(AlreadyExists):
                    publisher.create_topic(name=path)
            with contextlib.suppress(AlreadyExists):
                subscriber.create_subscription(
                    request={"name": dlq_sub, "topic": dlq_topic, "ack_deadline_seconds": 60}
                )
            push_config: dict[str, Any] = {"push_endpoint": endpoint}
            if oidc_service_account:
                push_config["oidc_token"] = {
                    "service_account_email": oidc_service_account,
                    "audience": oidc_audience or "",
                }
            pull = spec.delivery == "pull"  # consumed by queuerun worker, as in production
            if pull:
                push_config, endpoint = {}, ""
            request: dict[str, Any] = {
                "name": sub,
                "topic": topic,
                "push_config": push_config,
                "enable_exactly_once_delivery": pull and spec.exactly_once,
                "ack_deadline_seconds": spec.ack_deadline,
                "enable_message_ordering": spec.fifo,
                "retry_policy": {
                    "minimum_backoff": duration_pb2.Duration(seconds=int(spec.min_backoff)),
                    "maximum_backoff": duration_pb2.Duration(seconds=int(spec.max_backoff)),
                },
                "expiration_policy": {},  # never expire: an idle queue must not disappear
            }
            if not spec.fifo or dead_letter_on_fifo:
                request["dead_letter_policy"] = {
                    "dead_letter_topic": dlq_topic,
                    "max_delivery_attempts": spec.max_attempts,
                }
            try:
                subscriber.create_subscription(request=request)
            except AlreadyExists:
                subscriber.modify_push_config(subscription=sub, push_config=types.PushConfig(**push_config))
            out.append(QueueTopology(spec.name, topic, sub, dlq_topic, dlq_sub, endpoint))
    finally:
        publisher.stop()
        subscriber.close()
    return out


def delete_topology(
    app: App | None = None,
    *,
    project: str,
    emulator_host: str,
    app_name: str | None = None,
    specs: Iterable[QueueSpec] | None = None,
) -> None:
    """Remove what :func:`ensure_topology` created (missing resources are skipped)."""
    from google.api_core.exceptions import NotFound

    from .backends.gcp import make_publisher, make_subscriber

    name = app_name or (app.name if app is not None else None)
    queue_specs = list(specs if specs is not None else (app.specs if app is not None else ()))
    if name is None:
        raise ValueError("delete_topology needs an app or app_name")
    publisher = make_publisher(emulator_host=emulator_host)
    subscriber = make_subscriber(emulator_host=emulator_host)
    try:
        for spec in queue_specs:
            for sub in (subscription_id(name, spec.name), dead_letter_subscription_id(name, spec.name)):
                with contextlib.suppress(NotFound):
                    subscriber.delete_subscription(subscription=f"projects/{project}/subscriptions/{sub}")
            for topic in (topic_id(name, spec.name), dead_letter_topic_id(name, spec.name)):
                with contextlib.suppress(NotFound):
                    publisher.delete_topic(topic=f"projects/{project}/topics/{topic}")
    finally:
        publisher.stop()
        subscriber.close()
