"""A deployed example, rehearsed: the real push server, configured as the graph configures it, on the
emulators, behind :class:`~front_door.CloudRunFrontDoor`, with Pub/Sub's push played from real
published messages.

``Rehearsal.start(graph, door, emulator_env, google)`` gives ``.client`` (a Starlette TestClient of
the door) and ``.deliver(queue, job_id)``: pull the job the runtime published from a pull
subscription made for the rehearsal on the graph's topic, wrap it as Pub/Sub wraps a push (fields of
https://cloud.google.com/pubsub/docs/push), sign an ID token as Google would for the graph's push
subscription (its ``oidcToken`` service account and audience:
https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions) and post it from origin
``pubsub-same-project`` to the subscription's ``pushEndpoint`` path.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from front_door import ORIGIN_HEADER, CloudRunFrontDoor, Door
from server.test_oidc import KID, FakeCertsEndpoint, Key, _make_key, claims
from starlette.testclient import TestClient

from queuerun import App
from queuerun.server.app import PushServer
from queuerun.settings import ENV, Settings

SUBSCRIPTION_TYPE = "gcp:pubsub/subscription:Subscription"
TOPIC_TYPE = "gcp:pubsub/topic:Topic"
# Pub/Sub's success codes for push (https://cloud.google.com/pubsub/docs/push, older copy); the emulator
# differs on 202, which the push server never sends.
PUBSUB_ACKS = frozenset({102, 200, 201, 202, 204})


@dataclass
class Google:
    """The test's Google: one signing key, its certificate served as Google's certs endpoint would."""

    key: Key = field(default_factory=_make_key)

    def __post_init__(self) -> None:
        self.endpoint = FakeCertsEndpoint({KID: self.key.cert_pem})

    def certs(self) -> Mapping[str, str]:
        return dict(self.endpoint.certs)

    def id_token(self, *, audience: str, email: str, **overrides: Any) -> str:
        """An ID token as Google signs one for ``email`` (Pub/Sub signs push tokens the same way)."""
        return self.key.sign(claims(aud=audience, email=email, **overrides))


def wait_for(condition: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def server_environ(door: Door, emulator_env: Mapping[str, str]) -> dict[str, str]:
    """The container's environment: the graph's envs, the emulators instead of Google, and the
    ``K_SERVICE`` Cloud Run sets to the service name (https://cloud.google.com/run/docs/container-contract)."""
    env = dict(door.env)
    env.update(emulator_env)  # PUBSUB_/FIRESTORE_EMULATOR_HOST and the emulator's GOOGLE_CLOUD_PROJECT
    env[ENV.CLOUD_RUN_SERVICE] = door.service_name
    return env


@dataclass
class PushTarget:
    """One push subscription of the graph."""

    name: str
    topic_name: str
    endpoint: str
    audience: str
    service_account: str
    ordered: bool
    dead_letter: bool

    @property
    def path(self) -> str:
        return urlsplit(self.endpoint).path


def push_targets(graph: Any) -> dict[str, PushTarget]:
    """The graph's push subscriptions by queue (the last segment of the push endpoint path)."""
    topic_names = {r.inputs["name"] for r in graph.of_type(TOPIC_TYPE)}
    out = {}
    for r in graph.of_type(SUBSCRIPTION_TYPE):
        push = r.inputs.get("pushConfig")
        if not push:
            continue
        oidc = push.get("oidcToken") or {}
        topic = str(r.inputs["topic"]).rpartition("/")[2]
        if topic not in topic_names:
            raise ValueError(f"subscription {r.name!r}: topic {topic!r} is not a topic of the graph")
        target = PushTarget(
            name=r.inputs["name"],
            topic_name=topic,
            endpoint=push["pushEndpoint"],
            # Pub/Sub's default audience is the push endpoint URL (PushConfig.OidcToken.audience).
            audience=oidc.get("audience") or push["pushEndpoint"],
            service_account=oidc.get("serviceAccountEmail", ""),
            ordered=bool(r.inputs.get("enableMessageOrdering")),
            dead_letter=bool(r.inputs.get("deadLetterPolicy")),
        )
        out[target.path.rpartition("/")[2]] = target
    return out


class Rehearsal:
    """The app of a graph, served behind its door. Use :meth:`start` as a context manager."""

    def __init__(self, graph: Any, door: Door, app: App, emulator_env: Mapping[str, str], google: Google) -> None:
        self.graph = graph
        self.door = door
        self.app = app
        self.google = google
        self.env = server_environ(door, emulator_env)
        self.project = self.env[ENV.PROJECT]
        self.emulator_host = self.env["PUBSUB_EMULATOR_HOST"]
        self.targets = push_targets(graph)
        self.front: CloudRunFrontDoor | None = None
        self.client: TestClient | None = None
        self._pull: dict[str, str] = {}
        self._subscriber: Any = None

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        graph: Any,
        door: Door,
        app: App,
        emulator_env: Mapping[str, str],
        google: Google,
        env_overrides: Mapping[str, str] | None = None,
    ) -> Iterator[Rehearsal]:
        self = cls(graph, door, app, emulator_env, google)
        self.env.update(env_overrides or {})
        from queuerun.backends.gcp import make_subscriber

        saved = app._settings_source
        self._subscriber = make_subscriber(emulator_host=self.emulator_host)
        try:
            self._create_topology()
            app.use_settings(self.env)
            # The push server builds its verifier from the settings alone, as in the container; only
            # the transport to Google's certificates is the test's.
            server = PushServer(app, Settings.from_environ(self.env))
            self.front = CloudRunFrontDoor(door.deploy(), server.asgi(), certs=google.certs)
            with TestClient(self.front, base_url=door.url, raise_server_exceptions=True) as client:
                self.client = client
                yield self
        finally:
            self._delete_pull_subscriptions()
            self._subscriber.close()
            app.use_settings(saved if isinstance(saved, Mapping | Settings) else Settings.from_environ(None))

    # -- Pub/Sub, played -------------------------------------------------------------------------
    def _create_topology(self) -> None:
        """The graph's topics on the emulator, and a fresh pull subscription per push subscription."""
        from google.api_core.exceptions import AlreadyExists

        from queuerun.backends.gcp import make_publisher

        publisher = make_publisher(emulator_host=self.emulator_host)
        try:
            for topic in self.graph.of_type(TOPIC_TYPE):
                with contextlib.suppress(AlreadyExists):
                    publisher.create_topic(name=f"projects/{self.project}/topics/{topic.inputs['name']}")
        finally:
            publisher.stop()
        for queue, target in self.targets.items():
            pull = f"projects/{self.project}/subscriptions/{target.name}-rehearsal-{uuid.uuid4().hex[:8]}"
            self._subscriber.create_subscription(
                request={
                    "name": pull,
                    "topic": f"projects/{self.project}/topics/{target.topic_name}",
                    "enable_message_ordering": target.ordered,
                    "ack_deadline_seconds": 60,
                }
            )
            self._pull[queue] = pull

    def _delete_pull_subscriptions(self) -> None:
        from google.api_core.exceptions import NotFound

        for pull in self._pull.values():
            with contextlib.suppress(NotFound):
                self._subscriber.delete_subscription(subscription=pull)

    def pull(self, queue: str, job_id: str, timeout: float = 15.0) -> Any:
        """The message of ``job_id`` published on ``queue``'s topic, as Pub/Sub would deliver it."""
        found: dict[str, Any] = {}

        def arrived() -> Any:
            response = self._subscriber.pull(request={"subscription": self._pull[queue], "max_messages": 10}, timeout=5)
            for received in response.received_messages:
                self._subscriber.acknowledge(subscription=self._pull[queue], ack_ids=[received.ack_id])
                message = received.message
                if job_id in (message.message_id, *message.attributes.values()):
                    found["message"] = message
            return found.get("message")

        return wait_for(arrived, timeout=timeout, what=f"job {job_id} on {queue}'s topic")

    def envelope(self, queue: str, message: Any) -> dict[str, Any]:
        """The wrapped push body (https://cloud.google.com/pubsub/docs/push)."""
        target = self.targets[queue]
        body: dict[str, Any] = {
            "message": {
                "data": base64.b64encode(message.data).decode(),
                "attributes": dict(message.attributes),
                "messageId": message.message_id,
                "message_id": message.message_id,
                "publishTime": message.publish_time.rfc3339(),
                "publish_time": message.publish_time.rfc3339(),
            },
            "subscription": f"projects/{self.project}/subscriptions/{target.name}",
        }
        if message.ordering_key:
            body["message"]["orderingKey"] = message.ordering_key
        if target.dead_letter:  # sent only when the subscription has a dead-letter policy
            body["deliveryAttempt"] = 1
        return body

    def push_headers(self, queue: str, *, audience: str | None = None) -> dict[str, str]:
        """Headers of Pub/Sub's push request: its signed ID token, its origin."""
        target = self.targets[queue]
        token = self.google.id_token(audience=audience or target.audience, email=target.service_account)
        return {
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            ORIGIN_HEADER: "pubsub-same-project",
        }

    def deliver(self, queue: str, job_id: str, *, audience: str | None = None, attempts: int = 1) -> Any:
        """Push the published job to the service through the door, as the graph's subscription would.

        A non-success answer is a nack (https://cloud.google.com/pubsub/docs/push): the same message
        is pushed again, up to ``attempts`` deliveries (``deliveryAttempt`` counting up when the
        subscription has a dead-letter policy). Returns the last response.
        """
        assert self.client is not None
        body = self.envelope(queue, self.pull(queue, job_id))
        for attempt in range(1, attempts + 1):
            if "deliveryAttempt" in body:
                body["deliveryAttempt"] = attempt
            response = self.client.post(
                self.targets[queue].path, content=json.dumps(body), headers=self.push_headers(queue, audience=audience)
            )
            if response.status_code in PUBSUB_ACKS:
                break
        return response
