"""The resource graph QueueRunApp registers for an app with a standard, a FIFO and an HTTP queue."""

from __future__ import annotations

from typing import Any

import pytest

from queuerun import names
from queuerun.errors import ConfigurationError
from queuerun.settings import ENV
from queuerun.spec import make_spec
from queuerun_gcp import DEDUPE_COLLECTION, DONE_COLLECTION, TTL_FIELD, TYPE_TOKEN, QueueRunApp
from queuerun_gcp.constants import CLOUD_RUN_TIMEOUT_MAX, FUNCTIONS_FRAMEWORK_ENV

from .support import (
    PROJECT,
    PROJECT_NUMBER,
    Graph,
    Mocks,
    Res,
    StandInApp,
    assert_least_privilege,
    build,
    shop_args,
    shop_specs,
)

AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
RUNTIME = f"serviceAccount:shop-runtime@{PROJECT}.iam.gserviceaccount.com"
PUSH_EMAIL = f"shop-push@{PROJECT}.iam.gserviceaccount.com"
PUSH = f"serviceAccount:{PUSH_EMAIL}"
SERVICE_URI = "https://shop-abc123-uc.a.run.app"
AUDIENCE = f"queuerun:{PROJECT}:shop"
FIFO_SLUG = "update-profile-fifo-859e77"  # resource_slug("update_profile.fifo")

QUEUE_CHILDREN = (
    ("gcp:pubsub/topic:Topic", "topic"),
    ("gcp:pubsub/topic:Topic", "dlq"),
    ("gcp:pubsub/subscription:Subscription", "sub"),
    ("gcp:pubsub/subscription:Subscription", "dlq-sub"),
    ("gcp:pubsub/topicIAMMember:TopicIAMMember", "runtime-publisher"),
    ("gcp:pubsub/topicIAMMember:TopicIAMMember", "runtime-dlq-publisher"),
    ("gcp:pubsub/topicIAMMember:TopicIAMMember", "agent-dlq-publisher"),
    ("gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember", "agent-subscriber"),
)
APP_CHILDREN = {
    ("gcp:serviceaccount/account:Account", "shop-runtime"),
    ("gcp:serviceaccount/account:Account", "shop-push"),
    ("gcp:serviceaccount/iAMMember:IAMMember", "shop-agent-token-creator"),
    ("gcp:cloudrunv2/service:Service", "shop-service"),
    ("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "shop-push-invoker"),
    ("gcp:projects/iAMMember:IAMMember", "shop-runtime-datastore"),
    ("gcp:firestore/database:Database", "shop-firestore"),
    ("gcp:firestore/field:Field", "shop-ttl-queuerun-dedupe"),
    ("gcp:firestore/field:Field", "shop-ttl-queuerun-done"),
    ("gcp:firestore/field:Field", "shop-ttl-queuerun-socket-presence"),
    ("gcp:firestore/field:Field", "shop-ttl-queuerun-socket-messages"),
    ("gcp:storage/bucket:Bucket", "shop-source"),
    ("gcp:storage/bucketObject:BucketObject", "shop-source-archive"),
    ("gcp:artifactregistry/repository:Repository", "shop-images"),
}


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build(lambda: QueueRunApp("shop", **shop_args()))


def _sub(graph: Graph, slug: str) -> dict[str, Any]:
    return graph.named(f"shop-{slug}-sub").inputs


def test_registers_exactly_the_expected_resources_all_parented_to_the_component(graph: Graph) -> None:
    expected = set(APP_CHILDREN)
    for slug in ("emails", FIFO_SLUG, "signup"):
        expected |= {(typ, f"shop-{slug}-{suffix}") for typ, suffix in QUEUE_CHILDREN}
    children = [r for r in graph.resources if r.type != TYPE_TOKEN]

    assert {(r.type, r.name) for r in children} == expected
    assert len(children) == len(expected)  # no duplicates hiding behind the set
    assert {r.parent_type for r in children} == {TYPE_TOKEN}
    assert [(r.name, r.parent_type) for r in graph.of_type(TYPE_TOKEN)] == [("shop", "pulumi:pulumi:Stack")]


def test_topics_are_named_from_app_and_queue(graph: Graph) -> None:
    topics = {r.name: r.inputs["name"] for r in graph.of_type("pubsub/topic:Topic")}
    assert topics == {
        "shop-emails-topic": "shop-emails",
        "shop-emails-dlq": "shop-emails-dlq",
        f"shop-{FIFO_SLUG}-topic": "shop-update_profile.fifo",
        f"shop-{FIFO_SLUG}-dlq": "shop-update_profile.fifo-dlq",
        "shop-signup-topic": "shop-signup",
        "shop-signup-dlq": "shop-signup-dlq",
    }
    for topic in graph.of_type("pubsub/topic:Topic"):
        assert topic.inputs["labels"] == {"managed-by": "queuerun", "queuerun-app": "shop"}


@pytest.mark.parametrize(
    ("slug", "queue", "ack", "attempts", "backoff", "fifo"),
    [
        ("emails", "emails", 310, 5, ("10s", "600s"), False),
        (FIFO_SLUG, "update_profile.fifo", 70, 10, ("5s", "120s"), True),
        ("signup", "signup", 310, 5, ("10s", "600s"), False),
    ],
)
def test_push_subscription_follows_the_queue_spec(
    graph: Graph, slug: str, queue: str, ack: int, attempts: int, backoff: tuple[str, str], fifo: bool
) -> None:
    sub = _sub(graph, slug)
    assert sub["name"] == f"shop-{queue}-sub"
    assert sub["topic"] == f"projects/{PROJECT}/topics/shop-{queue}"
    assert sub["ackDeadlineSeconds"] == ack
    assert sub["enableMessageOrdering"] is fifo
    assert sub["enableExactlyOnceDelivery"] is False
    assert sub["expirationPolicy"] == {"ttl": ""}
    assert sub["retryPolicy"] == {"minimumBackoff": backoff[0], "maximumBackoff": backoff[1]}
    assert sub["deadLetterPolicy"] == {
        "deadLetterTopic": f"projects/{PROJECT}/topics/shop-{queue}-dlq",
        "maxDeliveryAttempts": attempts,
    }
    assert sub["pushConfig"] == {
        "pushEndpoint": f"{SERVICE_URI}/_pubsub/{queue}",
        "oidcToken": {"serviceAccountEmail": PUSH_EMAIL, "audience": AUDIENCE},
    }


def test_ack_deadlines_come_from_the_runtime_spec(graph: Graph) -> None:
    deadlines = {r.inputs["name"]: r.inputs["ackDeadlineSeconds"] for r in graph.of_type("Subscription")}
    for spec in shop_specs():
        assert deadlines[f"shop-{spec.name}-sub"] == spec.ack_deadline


@pytest.mark.parametrize(("slug", "queue"), [("emails", "emails"), (FIFO_SLUG, "update_profile.fifo")])
def test_dead_letter_topic_has_a_pull_subscription_that_never_expires(graph: Graph, slug: str, queue: str) -> None:
    sub = graph.named(f"shop-{slug}-dlq-sub").inputs
    assert sub["topic"] == f"projects/{PROJECT}/topics/shop-{queue}-dlq"
    assert sub["name"] == f"shop-{queue}-dlq-sub"
    assert "pushConfig" not in sub
    assert sub["expirationPolicy"] == {"ttl": ""}
    assert sub["messageRetentionDuration"] == "2678400s"
    assert "deadLetterPolicy" not in sub


def test_service_runs_as_runtime_account_with_timeout_covering_every_ack_deadline(graph: Graph) -> None:
    service = graph.named("shop-service").inputs
    template = service["template"]
    assert service["name"] == "shop"
    assert service["location"] == "us-central1"
    assert service["deletionProtection"] is False
    assert template["serviceAccount"] == RUNTIME.removeprefix("serviceAccount:")
    timeout = int(template["timeout"].removesuffix("s"))
    assert timeout >= max(s.ack_deadline for s in shop_specs())
    assert timeout <= CLOUD_RUN_TIMEOUT_MAX
    assert template["scaling"] == {"minInstanceCount": 0, "maxInstanceCount": 10}
    assert template["maxInstanceRequestConcurrency"] == 80
    assert template["containers"][0]["ports"] == {"containerPort": 8080}


def test_service_is_public_ingress_because_a_queue_has_http(graph: Graph) -> None:
    assert graph.named("shop-service").inputs["ingress"] == "INGRESS_TRAFFIC_ALL"


def test_service_without_http_queues_accepts_internal_traffic_only() -> None:
    app = StandInApp("shop", (make_spec("emails"),))
    g = build(lambda: QueueRunApp("shop", **shop_args(app=app)))
    assert g.named("shop-service").inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"


def test_service_environment_is_what_the_runtime_reads(graph: Graph) -> None:
    envs = graph.named("shop-service").inputs["template"]["containers"][0]["envs"]
    env = {e["name"]: e["value"] for e in envs}
    queuerun_env = {k: v for k, v in env.items() if k not in FUNCTIONS_FRAMEWORK_ENV}
    assert set(queuerun_env) <= set(ENV.names())
    assert env == {
        "FUNCTION_USE_ASGI": "1",
        ENV.BACKEND: "gcp",
        ENV.PROJECT: PROJECT,
        ENV.APP: "main:app",
        ENV.PUSH_AUDIENCE: AUDIENCE,
        ENV.PUSH_SERVICE_ACCOUNT: PUSH_EMAIL,
        ENV.FIRESTORE_DATABASE: "shop-queuerun",
        ENV.PUBSUB_ENDPOINT: "us-central1-pubsub.googleapis.com:443",
    }


def test_push_audience_on_subscriptions_matches_the_service_env(graph: Graph) -> None:
    envs = graph.named("shop-service").inputs["template"]["containers"][0]["envs"]
    audience = next(e["value"] for e in envs if e["name"] == ENV.PUSH_AUDIENCE)
    audiences = {
        r.inputs["pushConfig"]["oidcToken"]["audience"]
        for r in graph.of_type("Subscription")
        if "pushConfig" in r.inputs
    }
    assert audiences == {audience}


def test_source_is_uploaded_privately_and_built_with_the_function_target(graph: Graph) -> None:
    bucket = graph.named("shop-source").inputs
    archive = graph.named("shop-source-archive").inputs
    build_config = graph.named("shop-service").inputs["buildConfig"]
    container = graph.named("shop-service").inputs["template"]["containers"][0]
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["location"] == "us-central1"
    assert archive["bucket"] == bucket["name"]
    assert archive["name"].startswith("source-") and archive["name"].endswith(".zip")
    assert {"main.py", "requirements.txt", "queuerun/server/functions.py"} <= set(archive["source"].assets)
    assert build_config["sourceLocation"] == f"gs://{bucket['name']}/{archive['name']}"
    assert build_config["functionTarget"] == "queuerun"
    assert build_config["imageUri"] == f"us-central1-docker.pkg.dev/{PROJECT}/shop-queuerun/shop"
    assert container["image"] == build_config["imageUri"]
    assert container["baseImageUri"] == build_config["baseImage"]
    assert graph.named("shop-images").inputs["format"] == "DOCKER"


def test_firestore_database_and_ttl_policies(graph: Graph) -> None:
    database = graph.named("shop-firestore").inputs
    assert database["name"] == "shop-queuerun"
    assert database["type"] == "FIRESTORE_NATIVE"
    assert database["locationId"] == "us-central1"
    assert database["deleteProtectionState"] == "DELETE_PROTECTION_DISABLED"
    assert database["deletionPolicy"] == "DELETE"
    fields = {(f.inputs["collection"], f.inputs["field"], f.inputs["database"]) for f in graph.of_type("Field")}
    collections = (DEDUPE_COLLECTION, DONE_COLLECTION, "queuerun_socket_presence", "queuerun_socket_messages")
    assert fields == {(c, TTL_FIELD, "shop-queuerun") for c in collections}
    for field in graph.of_type("Field"):
        assert field.inputs["ttlConfig"] == {}


def test_every_iam_binding(graph: Graph) -> None:
    assert graph.iam_bindings() == sorted(
        [
            (
                "IAMMember",
                f"projects/{PROJECT}/serviceAccounts/{PUSH_EMAIL}",
                "roles/iam.serviceAccountTokenCreator",
                AGENT,
            ),
            ("IAMMember", PROJECT, "roles/datastore.user", RUNTIME),
            ("ServiceIamMember", "shop", "roles/run.invoker", PUSH),
            *[
                ("TopicIAMMember", f"shop-{q}", "roles/pubsub.publisher", RUNTIME)
                for q in ("emails", "update_profile.fifo", "signup")
            ],
            *[
                ("TopicIAMMember", f"shop-{q}-dlq", "roles/pubsub.publisher", member)
                for q in ("emails", "update_profile.fifo", "signup")
                for member in (AGENT, RUNTIME)
            ],
            *[
                ("SubscriptionIAMMember", f"shop-{q}-sub", "roles/pubsub.subscriber", AGENT)
                for q in ("emails", "update_profile.fifo", "signup")
            ],
        ]
    )


def test_datastore_role_is_conditioned_on_the_app_database(graph: Graph) -> None:
    condition = graph.named("shop-runtime-datastore").inputs["condition"]
    assert condition["expression"] == f'resource.name == "projects/{PROJECT}/databases/shop-queuerun"'


def test_least_privilege_no_project_wide_binding_and_no_all_users(graph: Graph) -> None:
    assert_least_privilege(graph, public=False)


def _fake_binding(typ: str, role: str, member: str, **inputs: Any) -> Res:
    return Res("urn", typ, "fake", TYPE_TOKEN, {"role": role, "member": member, **inputs}, {})


@pytest.mark.parametrize(
    "binding",
    [
        _fake_binding("gcp:projects/iAMMember:IAMMember", "roles/pubsub.publisher", RUNTIME, project=PROJECT),
        _fake_binding("gcp:projects/iAMMember:IAMMember", "roles/editor", RUNTIME, project=PROJECT),
        _fake_binding("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "roles/run.invoker", "allUsers", name="shop"),
        _fake_binding("gcp:pubsub/topicIAMBinding:TopicIAMBinding", "roles/pubsub.publisher", RUNTIME, topic="t"),
    ],
    ids=["project-wide", "primitive", "all-users", "authoritative"],
)
def test_least_privilege_check_catches_broad_grants(graph: Graph, binding: Res) -> None:
    broken = Graph(resources=[*graph.resources, binding])
    with pytest.raises(AssertionError):
        assert_least_privilege(broken, public=False)


def test_public_http_queue_grants_all_users_invoker_on_the_service_only() -> None:
    app = StandInApp("shop", (make_spec("emails"), make_spec("signup", http=True, public=True)))
    g = build(lambda: QueueRunApp("shop", **shop_args(app=app)))
    public = g.named("shop-public-invoker").inputs
    assert (public["role"], public["member"], public["name"]) == ("roles/run.invoker", "allUsers", "shop")
    assert_least_privilege(g, public=True)


def test_pull_queue_gets_exactly_once_no_push_config_and_a_runtime_subscriber() -> None:
    app = StandInApp("shop", (make_spec("reports.fifo", delivery="pull", exactly_once=True, timeout=1200),))
    g = build(lambda: QueueRunApp("shop", **shop_args(app=app)))
    slug = names.resource_slug("reports.fifo")
    sub = g.named(f"shop-{slug}-sub").inputs
    assert "pushConfig" not in sub
    assert sub["enableExactlyOnceDelivery"] is True
    assert sub["enableMessageOrdering"] is True
    assert sub["ackDeadlineSeconds"] == 600
    runtime_sub = g.named(f"shop-{slug}-runtime-subscriber").inputs
    assert (runtime_sub["subscription"], runtime_sub["role"], runtime_sub["member"]) == (
        "shop-reports.fifo-sub",
        "roles/pubsub.subscriber",
        RUNTIME,
    )
    assert_least_privilege(g, public=False)


def test_image_deploys_without_bucket_or_build() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(source=None, image="us-docker.pkg.dev/p/r/shop:1")))
    service = g.named("shop-service").inputs
    container = service["template"]["containers"][0]
    assert container["image"] == "us-docker.pkg.dev/p/r/shop:1"
    assert {e["name"] for e in container["envs"]} <= set(ENV.names())
    assert "buildConfig" not in service
    assert not g.of_type("storage/bucket:Bucket") and not g.of_type("Repository")


def test_existing_firestore_database_is_used_not_created() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(firestore_database="(default)")))
    assert not g.of_type("firestore/database:Database")
    assert {f.inputs["database"] for f in g.of_type("Field")} == {"(default)"}
    condition = g.named("shop-runtime-datastore").inputs["condition"]["expression"]
    assert condition.endswith('/databases/(default)"')


def test_ttl_policies_can_be_left_to_another_stack() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(firestore_ttl=False)))
    assert not g.of_type("firestore/field:Field")


def test_deletion_protection_is_on_by_default() -> None:
    args = shop_args()
    del args["deletion_protection"]
    g = build(lambda: QueueRunApp("shop", **args))
    assert g.named("shop-service").inputs["deletionProtection"] is True
    assert g.named("shop-firestore").inputs["deleteProtectionState"] == "DELETE_PROTECTION_ENABLED"
    assert g.named("shop-source").inputs["forceDestroy"] is False


def test_apis_are_enabled_only_on_request_and_never_disabled_on_destroy(graph: Graph) -> None:
    assert not graph.of_type("projects/service:Service")
    g = build(lambda: QueueRunApp("shop", **shop_args(enable_apis=True)))
    apis = g.of_type("projects/service:Service")
    assert {a.inputs["service"] for a in apis} == {
        "run.googleapis.com",
        "pubsub.googleapis.com",
        "firestore.googleapis.com",
        "iam.googleapis.com",
        "cloudbuild.googleapis.com",
        "storage.googleapis.com",
        "artifactregistry.googleapis.com",
    }
    assert {a.inputs["disableOnDestroy"] for a in apis} == {False}


def test_extra_env_and_scaling_options_reach_the_service() -> None:
    g = build(
        lambda: QueueRunApp(
            "shop", **shop_args(env={"LOG_LEVEL": "debug"}, min_instances=1, max_instances=3, request_timeout=900)
        )
    )
    template = g.named("shop-service").inputs["template"]
    assert {"name": "LOG_LEVEL", "value": "debug"} in template["containers"][0]["envs"]
    assert template["scaling"] == {"minInstanceCount": 1, "maxInstanceCount": 3}
    assert template["timeout"] == "900s"


def test_region_defaults_to_gcp_config() -> None:
    args = shop_args()
    del args["region"]
    g = build(lambda: QueueRunApp("shop", **args), config={"gcp:region": "europe-west1"})
    assert g.named("shop-service").inputs["location"] == "europe-west1"


def test_pull_queue_without_exactly_once_keeps_the_declared_choice() -> None:
    app = StandInApp("shop", (make_spec("reports", delivery="pull"),))
    g = build(lambda: QueueRunApp("shop", **shop_args(app=app)))
    sub = g.named("shop-reports-sub").inputs
    assert (sub["enableExactlyOnceDelivery"], sub["enableMessageOrdering"]) == (False, False)
    assert "pushConfig" not in sub


def test_explicit_project_is_used_everywhere() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(project="other-project")))
    assert {r.inputs.get("project") for r in g.of_type("pubsub/topic:Topic")} == {"other-project"}
    envs = {e["name"]: e["value"] for e in g.named("shop-service").inputs["template"]["containers"][0]["envs"]}
    assert envs[ENV.PROJECT] == "other-project"
    assert envs[ENV.PUSH_AUDIENCE] == "queuerun:other-project:shop"
    datastore = g.named("shop-runtime-datastore").inputs
    assert datastore["project"] == "other-project"
    assert datastore["condition"]["expression"] == 'resource.name == "projects/other-project/databases/shop-queuerun"'


def test_source_build_can_run_the_runtimes_own_server_for_websockets() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(source_server="uvicorn")))
    service = g.named("shop-service").inputs
    build_config = service["buildConfig"]
    assert build_config["environmentVariables"] == {"GOOGLE_ENTRYPOINT": "python -m queuerun.server"}
    assert "functionTarget" not in build_config
    envs = {e["name"] for e in service["template"]["containers"][0]["envs"]}
    assert "FUNCTION_USE_ASGI" not in envs and ENV.APP in envs


def test_source_server_must_be_known(mocks: Mocks) -> None:
    with pytest.raises(
        ConfigurationError, match="source_server must be 'functions-framework' or 'uvicorn', got 'gunicorn'"
    ):
        QueueRunApp("shop", **shop_args(source_server="gunicorn"))
