"""app=, manifest= and queues= produce the same resources; outputs and grant helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest

from queuerun.errors import ConfigurationError, QueueNotFoundError
from queuerun.manifest import make_manifest
from queuerun_gcp import QueueRunApp

from .support import PROJECT, Graph, StandInApp, build, shop_args, shop_specs


def _graph(**overrides: Any) -> Graph:
    return build(lambda: QueueRunApp("shop", **shop_args(**overrides)))


def test_app_manifest_and_queues_produce_identical_resources(tmp_path: Path) -> None:
    manifest = tmp_path / "queuerun.json"
    manifest.write_text(make_manifest("shop", shop_specs()).to_json())

    from_app = _graph().snapshot()
    from_manifest = _graph(app=None, manifest=str(manifest)).snapshot()
    from_dicts = _graph(app=None, queues=[s.to_dict() for s in shop_specs()]).snapshot()
    from_specs = _graph(app=None, queues=list(shop_specs())).snapshot()

    assert from_manifest == from_app
    assert from_dicts == from_app
    assert from_specs == from_app


def test_real_app_declarations_provision_the_same_resources() -> None:
    from queuerun import App

    app = App("shop")

    @app.queue("emails")
    def send_email(job: Any, meta: Any) -> None: ...

    @app.queue("update_profile.fifo", timeout=60, max_attempts=10, min_backoff=5, max_backoff=120)
    def update_profile(job: Any, meta: Any) -> None: ...

    @app.queue("signup", http=True, accepts=["application/json"])
    def signup(job: Any, meta: Any) -> None: ...

    assert _graph(app=app).snapshot() == _graph().snapshot()


def test_queues_take_the_app_name_from_app_name_or_the_component_name() -> None:
    g = _graph(app=None, queues=[{"name": "emails"}], app_name="store")
    assert g.named("shop-emails-topic").inputs["name"] == "store-emails"
    assert g.named("shop-service").inputs["name"] == "store"


def test_outputs_expose_url_names_and_accounts() -> None:
    def program() -> pulumi.Output[Any]:
        app = QueueRunApp("shop", **shop_args())
        return pulumi.Output.all(
            url=app.url,
            topics=app.topics,
            subscriptions=app.subscriptions,
            dead_letter_topics=app.dead_letter_topics,
            dead_letter_subscriptions=app.dead_letter_subscriptions,
            runtime=app.runtime_service_account_email,
            push=app.push_service_account_email,
            audience=app.push_audience,
            database=app.firestore_database,
        )

    seen: dict[str, Any] = {}

    def capture() -> pulumi.Output[Any]:
        return program().apply(seen.update)

    build(capture)
    assert seen["url"] == "https://shop-abc123-uc.a.run.app"
    assert seen["topics"] == {q: f"shop-{q}" for q in ("emails", "update_profile.fifo", "signup")}
    assert seen["subscriptions"]["update_profile.fifo"] == "shop-update_profile.fifo-sub"
    assert seen["dead_letter_topics"]["emails"] == "shop-emails-dlq"
    assert seen["dead_letter_subscriptions"]["signup"] == "shop-signup-dlq-sub"
    assert seen["runtime"] == f"shop-runtime@{PROJECT}.iam.gserviceaccount.com"
    assert seen["push"] == f"shop-push@{PROJECT}.iam.gserviceaccount.com"
    assert seen["audience"] == f"queuerun:{PROJECT}:shop"
    assert seen["database"] == "shop-queuerun"


def test_grant_publish_gives_publisher_on_the_named_queue_topic_only() -> None:
    member = "serviceAccount:api@p.iam.gserviceaccount.com"
    g = build(lambda: QueueRunApp("shop", **shop_args()).grant_publish(member, "emails"))
    grants = [r for r in g.of_type("TopicIAMMember") if r.inputs["member"] == member]
    assert [(r.inputs["topic"], r.inputs["role"]) for r in grants] == [("shop-emails", "roles/pubsub.publisher")]
    assert grants[0].parent_type == "queuerun:index:QueueRunApp"


def test_grant_publish_without_queue_covers_every_topic() -> None:
    member = "group:ops@example.com"
    g = build(lambda: QueueRunApp("shop", **shop_args()).grant_publish(member))
    topics = sorted(r.inputs["topic"] for r in g.of_type("TopicIAMMember") if r.inputs["member"] == member)
    assert topics == ["shop-emails", "shop-signup", "shop-update_profile.fifo"]


def test_grant_invoke_and_dead_letters() -> None:
    member = "user:dev@example.com"

    def program() -> None:
        app = QueueRunApp("shop", **shop_args())
        app.grant_invoke(member)
        app.grant_dead_letters(member, "emails")

    g = build(program)
    invoke = [r.inputs for r in g.of_type("ServiceIamMember") if r.inputs["member"] == member]
    dead = [r.inputs for r in g.of_type("SubscriptionIAMMember") if r.inputs["member"] == member]
    assert [(i["name"], i["role"]) for i in invoke] == [("shop", "roles/run.invoker")]
    assert [(i["subscription"], i["role"]) for i in dead] == [("shop-emails-dlq-sub", "roles/pubsub.subscriber")]


def test_grants_refuse_unknown_queues_and_unlabelled_outputs() -> None:
    def program() -> None:
        app = QueueRunApp("shop", **shop_args(app=StandInApp("shop", shop_specs())))
        with pytest.raises(QueueNotFoundError, match="'nope'"):
            app.grant_publish("user:a@b.c", "nope")
        with pytest.raises(ConfigurationError, match="pass name="):
            app.grant_publish(pulumi.Output.from_input("user:a@b.c"))
        app.grant_publish(pulumi.Output.from_input("user:a@b.c"), "emails", name="api")

    g = build(program)
    assert g.named("shop-emails-publish-api").inputs["member"] == "user:a@b.c"
