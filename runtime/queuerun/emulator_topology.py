"""Create an app's topics and subscriptions on the Pub/Sub emulator, from its queue declarations.

The settings come from :func:`queuerun.topology.subscription_settings`, the projection the Pulumi
component deploys; :func:`subscription_request` departs from them only through the overrides named
in :data:`~queuerun.topology.EMULATOR_GAPS`:

- ``fifo_dead_letter_policy``: the emulator cannot combine message ordering with a dead-letter
  policy (the subscription stalls once a message reaches its maximum attempts: see the reference
  notes), so FIFO subscriptions get none by default. The push server still dead-letters a FIFO job
  itself after ``max_attempts`` failed deliveries it counted, so the group moves on.

Pull queues get pull subscriptions, as deployed (exactly-once as declared), consumed by the pull
worker (``queuerun worker``; ``queuerun dev --emulators`` runs it).

Idempotent: on a second run existing resources are kept and push subscriptions are pointed at the
new URL (a dev server on a new port).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .names import dead_letter_subscription_id, dead_letter_topic_id, subscription_id, topic_id
from .spec import QueueSpec
from .topology import PUSH_PATH, SubscriptionSettings, push_route, subscription_settings

if TYPE_CHECKING:
    from .app import App

__all__ = ["PUSH_PATH", "QueueTopology", "delete_topology", "ensure_topology", "push_endpoint", "subscription_request"]


@dataclass(frozen=True)
class QueueTopology:
    queue: str
    topic: str
    subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str
    push_endpoint: str


def push_endpoint(push_base_url: str, queue: str) -> str:
    return push_base_url.rstrip("/") + push_route(queue)


def _duration(seconds: float) -> dict[str, int]:
    """A protobuf Duration as a request field, sub-second part included (0.5 s is not 0 s)."""
    whole = int(seconds)
    return {"seconds": whole, "nanos": round((seconds - whole) * 1e9)}


def subscription_request(
    project: str,
    settings: SubscriptionSettings,
    *,
    push_base_url: str,
    dead_letter_on_fifo: bool = False,
    oidc_service_account: str | None = None,
    oidc_audience: str | None = None,
) -> dict[str, Any]:
    """The emulator's CreateSubscription request for one queue: ``settings`` with the named gaps applied."""
    push_config: dict[str, Any] = {}  # a pull subscription
    if settings.push_route is not None:
        push_config["push_endpoint"] = push_endpoint(push_base_url, settings.queue)
        if oidc_service_account:
            push_config["oidc_token"] = {"service_account_email": oidc_service_account, "audience": oidc_audience or ""}
    request: dict[str, Any] = {
        "name": f"projects/{project}/subscriptions/{settings.subscription_id}",
        "topic": f"projects/{project}/topics/{settings.topic_id}",
        "push_config": push_config,
        "enable_exactly_once_delivery": settings.enable_exactly_once_delivery,
        "ack_deadline_seconds": settings.ack_deadline_seconds,
        "enable_message_ordering": settings.enable_message_ordering,
        "retry_policy": {
            "minimum_backoff": _duration(settings.minimum_backoff),
            "maximum_backoff": _duration(settings.maximum_backoff),
        },
        "expiration_policy": {},  # never expire: an idle queue must not disappear
    }
    if not settings.enable_message_ordering or dead_letter_on_fifo:  # fifo_dead_letter_policy
        request["dead_letter_policy"] = {
            "dead_letter_topic": f"projects/{project}/topics/{settings.dead_letter_topic_id}",
            "max_delivery_attempts": settings.max_delivery_attempts,
        }
    return request


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
            settings = subscription_settings(name, spec)
            request = subscription_request(
                project,
                settings,
                push_base_url=push_base_url,
                dead_letter_on_fifo=dead_letter_on_fifo,
                oidc_service_account=oidc_service_account,
                oidc_audience=oidc_audience,
            )
            topic, sub, push_config = request["topic"], request["name"], request["push_config"]
            endpoint = push_config.get("push_endpoint", "")
            dlq_topic = f"projects/{project}/topics/{settings.dead_letter_topic_id}"
            dlq_sub = f"projects/{project}/subscriptions/{settings.dead_letter_subscription_id}"
            for path in (topic, dlq_topic):
                with contextlib.suppress(AlreadyExists):
                    publisher.create_topic(name=path)
            with contextlib.suppress(AlreadyExists):
                subscriber.create_subscription(
                    request={
                        "name": dlq_sub,
                        "topic": dlq_topic,
                        "ack_deadline_seconds": settings.dead_letter_ack_deadline_seconds,
                    }
                )
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
