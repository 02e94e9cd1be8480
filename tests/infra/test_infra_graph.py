"""The resource graph QueueRunApp registers for an app with a standard, a FIFO and an HTTP queue."""

from __future__ import annotations

from typing import Any

import pytest

from queuerun import names
from queuerun.errors import ConfigurationError
from queuerun.settings import ENV
from queuerun.spec import make_spec
from queuerun_gcp import DEDUPE_COLLECTION, DONE_COLLECTION, TTL_FIELD, TYPE_TOKEN, QueueRunApp
from queuerun_gcp.constants import CLOUD_RUN_TIMEOUT_MAX

from .support import (
    PROJECT,
    PROJECT_NUMBER,
    Graph,
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
BUILD_EMAIL = f"shop-build@{PROJECT}.iam.gserviceaccount.com"
BUILD = f"serviceAccount:{BUILD_EMAIL}"
AUDIENCE = f"queuerun:{PROJECT}:shop"
BUILD_TYPE = "pulumi-python:dynamic/queuerun:CloudBuildImage"
APIS = {
    "cloudresourcemanager.googleapis.com",
    "iam.googleapis.com",
    "run.googleapis.com",
    "pubsub.googleapis.com",
    "firestore.googleapis.com",
    "secretmanager.googleapis.com",
}
SOURCE_APIS = {"cloudbuild.googleapis.com", "artifactregistry.googleapis.com", "storage.googleapis.com"}
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
    ("gcp:projects/serviceIdentity:ServiceIdentity", "shop-pubsub-agent"),
    ("gcp:serviceaccount/account:Account", "shop-build"),
    ("gcp:projects/iAMMember:IAMMember", "shop-build-logs"),
    ("gcp:storage/bucketIAMMember:BucketIAMMember", "shop-build-source-reader"),
    ("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember", "shop-build-image-writer"),
    (BUILD_TYPE, "shop-image"),
    ("pulumi-python:dynamic/queuerun:UserKey", "shop-user-key-value"),
    ("gcp:secretmanager/secret:Secret", "shop-user-key"),
    ("gcp:secretmanager/secretVersion:SecretVersion", "shop-user-key-version"),
    ("gcp:secretmanager/secretIamMember:SecretIamMember", "shop-user-key-runtime-accessor"),
    *(("gcp:projects/service:Service", f"shop-api-{api.split('.')[0]}") for api in APIS | SOURCE_APIS),
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
    # Room for every push queue's concurrency (3 queues x 10) plus 80 for HTTP and WebSockets.
    assert template["maxInstanceRequestConcurrency"] == sum(s.concurrency for s in shop_specs()) + 80 == 110
    assert template["containers"][0]["ports"] == {"containerPort": 8080}


def test_service_is_private_by_default_even_with_an_http_queue(graph: Graph) -> None:
    service = graph.named("shop-service").inputs
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    assert service["invokerIamDisabled"] is False
    assert not [b for b in graph.iam_bindings() if b[3] == "allUsers"]
    assert any("'signup'" in w and "access='private'" in w for w in graph.result.warnings)


@pytest.mark.parametrize(
    ("access", "disabled", "ingress", "all_users", "push_auth"),
    [
        ("private", False, "INGRESS_TRAFFIC_INTERNAL_ONLY", False, "cloud-run-iam"),
        ("iam", False, "INGRESS_TRAFFIC_ALL", False, "cloud-run-iam"),
        ("public", False, "INGRESS_TRAFFIC_ALL", True, "verify"),
        ("public", True, "INGRESS_TRAFFIC_ALL", False, "verify"),
    ],
)
def test_access_decides_ingress_invokers_and_how_push_tokens_are_checked(
    access: str, disabled: bool, ingress: str, all_users: bool, push_auth: str
) -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(access=access, invoker_iam_disabled=disabled)))
    service = g.named("shop-service").inputs
    env = {e["name"]: e["value"] for e in service["template"]["containers"][0]["envs"] if "value" in e}
    assert service["ingress"] == ingress
    assert service["invokerIamDisabled"] is disabled
    assert any(b[3] == "allUsers" for b in g.iam_bindings()) is all_users
    # IAM-protected: Cloud Run checked the token and strips its signature; public: the server verifies it.
    assert env[ENV.PUSH_AUTH] == push_auth


def test_service_declares_the_push_audience_as_a_custom_audience(graph: Graph) -> None:
    # Cloud Run's IAM layer admits only tokens for its run.app URL or a declared custom audience.
    assert graph.named("shop-service").inputs["customAudiences"] == [AUDIENCE]


def test_service_environment_is_what_the_runtime_reads(graph: Graph) -> None:
    envs = graph.named("shop-service").inputs["template"]["containers"][0]["envs"]
    env = {e["name"]: e["value"] for e in envs if "value" in e}
    assert set(env) <= set(ENV.names())
    assert env == {
        ENV.BACKEND: "gcp",
        ENV.PROJECT: PROJECT,
        ENV.APP: "main:app",
        ENV.PUSH_AUDIENCE: AUDIENCE,
        ENV.PUSH_SERVICE_ACCOUNT: PUSH_EMAIL,
        ENV.PUSH_AUTH: "cloud-run-iam",
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


def test_source_is_uploaded_privately_built_by_cloud_build_and_deployed_by_digest(graph: Graph) -> None:
    bucket = graph.named("shop-source").inputs
    archive = graph.named("shop-source-archive").inputs
    image = graph.named("shop-image")
    service = graph.named("shop-service").inputs
    container = service["template"]["containers"][0]
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["location"] == "us-central1"
    assert archive["bucket"] == bucket["name"]
    assert archive["name"].startswith("source-") and archive["name"].endswith(".zip")
    assert {"Dockerfile", "requirements.txt", "queuerun/server/__main__.py"} <= set(archive["source"].assets)
    # The build reads that very object and pushes to the app's repository, as the build account.
    assert image.inputs["source_bucket"] == bucket["name"]
    assert image.inputs["source_object"] == archive["name"]
    assert image.inputs["tag"] == archive["name"].removeprefix("source-").removesuffix(".zip")
    assert image.inputs["image"] == f"us-central1-docker.pkg.dev/{PROJECT}/shop-queuerun/shop"
    assert image.inputs["service_account"] == BUILD_EMAIL
    # The service runs what the build pushed, by digest: no build_config (it starts no build).
    assert container["image"] == image.outputs["image_digest_ref"]
    assert container["image"].startswith(image.inputs["image"] + "@sha256:")
    assert "buildConfig" not in service and "baseImageUri" not in container
    assert graph.named("shop-images").inputs["format"] == "DOCKER"


def test_build_account_holds_only_what_a_build_needs(graph: Graph) -> None:
    build_grants = [b for b in graph.iam_bindings() if b[3] == BUILD]
    assert build_grants == sorted(
        [
            ("BucketIAMMember", graph.named("shop-source").inputs["name"], "roles/storage.objectViewer", BUILD),
            ("IAMMember", PROJECT, "roles/logging.logWriter", BUILD),
            ("RepositoryIamMember", "shop-queuerun", "roles/artifactregistry.writer", BUILD),
        ]
    )


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
            ("IAMMember", PROJECT, "roles/logging.logWriter", BUILD),
            ("BucketIAMMember", graph.named("shop-source").inputs["name"], "roles/storage.objectViewer", BUILD),
            ("RepositoryIamMember", "shop-queuerun", "roles/artifactregistry.writer", BUILD),
            ("ServiceIamMember", "shop", "roles/run.invoker", PUSH),
            (
                "SecretIamMember",
                f"projects/{PROJECT}/secrets/shop-user-key",
                "roles/secretmanager.secretAccessor",
                RUNTIME,
            ),
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
    g = build(lambda: QueueRunApp("shop", **shop_args(app=app, access="public")))
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
    assert not g.of_type("storage/bucket:Bucket") and not g.of_type("Repository") and not g.of_type(BUILD_TYPE)
    assert {a.inputs["service"] for a in g.of_type("projects/service:Service")} == APIS


def test_existing_firestore_database_is_used_not_created() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(firestore_database="(default)")))
    assert not g.of_type("firestore/database:Database")
    assert {f.inputs["database"] for f in g.of_type("Field")} == {"(default)"}
    condition = g.named("shop-runtime-datastore").inputs["condition"]["expression"]
    assert condition.endswith('/databases/(default)"')


def test_ttl_policies_can_be_left_to_another_stack() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(firestore_ttl=False)))
    assert not g.of_type("firestore/field:Field")


def test_deletion_protection_is_on_by_default_and_protects_what_holds_jobs_and_state() -> None:
    args = shop_args()
    del args["deletion_protection"]
    g = build(lambda: QueueRunApp("shop", **args))
    assert g.named("shop-service").inputs["deletionProtection"] is True
    assert g.named("shop-firestore").inputs["deleteProtectionState"] == "DELETE_PROTECTION_ENABLED"
    assert g.named("shop-source").inputs["forceDestroy"] is False
    # Pulumi refuses to delete a protected resource, so `pulumi destroy` stops before any of these go.
    kept = {"shop-service", "shop-firestore", "shop-source"}
    kept |= {"shop-user-key-value", "shop-user-key", "shop-user-key-version"}  # losing the key strips users
    for slug in ("emails", FIFO_SLUG, "signup"):
        kept |= {f"shop-{slug}-{suffix}" for suffix in ("topic", "sub", "dlq", "dlq-sub")}
    assert g.protected == kept


def test_throwaway_stacks_protect_nothing(graph: Graph) -> None:
    assert graph.protected == set()


def test_apis_are_enabled_by_default_and_never_disabled_on_destroy(graph: Graph) -> None:
    apis = graph.of_type("projects/service:Service")
    assert {a.inputs["service"] for a in apis} == APIS | SOURCE_APIS
    assert {a.inputs["disableOnDestroy"] for a in apis} == {False}
    assert not [w for w in graph.result.warnings if "enable_apis" in w]


def test_every_resource_waits_for_the_apis(graph: Graph) -> None:
    apis = {r.urn for r in graph.of_type("projects/service:Service")}
    assert len(apis) == len(APIS | SOURCE_APIS)
    for r in graph.resources:
        if r.urn in apis or r.type == TYPE_TOKEN:
            continue
        assert apis <= graph.dependencies[r.urn], f"{r.name} may be created before the APIs it needs"


def test_the_user_key_is_a_secret_only_the_runtime_reads_and_the_service_gets_by_pinned_version(graph: Graph) -> None:
    """queuerun.user_seal: publishers cannot seal a job's user because they cannot read this key."""
    secret = graph.named("shop-user-key")
    version = graph.named("shop-user-key-version")
    readers = [b for b in graph.iam_bindings() if b[0] == "SecretIamMember"]
    assert readers == [("SecretIamMember", secret.outputs["name"], "roles/secretmanager.secretAccessor", RUNTIME)]
    secret_data = version.inputs["secretData"]  # a Pulumi secret: {sig: ..., "value": ...} in the engine's terms
    assert secret_data["value"] == graph.named("shop-user-key-value").outputs["key"]
    service = graph.named("shop-service")
    (env,) = [e for e in service.inputs["template"]["containers"][0]["envs"] if e["name"] == ENV.USER_KEY]
    assert "value" not in env  # never a plain value in the service's configuration
    assert env["valueSource"]["secretKeyRef"] == {"secret": "shop-user-key", "version": "1"}
    accessor = graph.named("shop-user-key-runtime-accessor")
    assert accessor.urn in graph.dependencies[service.urn]  # Cloud Run checks the grant at deploy


def test_pubsub_agent_comes_from_service_identity_so_it_exists_before_its_grants(graph: Graph) -> None:
    agent = graph.named("shop-pubsub-agent").inputs
    assert agent["service"] == "pubsub.googleapis.com"
    assert len([b for b in graph.iam_bindings() if b[3] == AGENT]) == 7  # its member is what the grants name


def test_api_management_can_be_left_to_the_user_with_the_list_printed() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(enable_apis=False)))
    assert not g.of_type("projects/service:Service")
    [warning] = [w for w in g.result.warnings if "enable_apis" in w]
    assert all(api in warning for api in APIS | SOURCE_APIS)
    assert any("enable_apis=False" in w for w in g.warnings)  # logged through pulumi.log.warn too


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


def test_request_concurrency_can_be_set_and_is_capped_at_cloud_runs_1000() -> None:
    explicit = build(lambda: QueueRunApp("shop", **shop_args(container_concurrency=5)))
    assert explicit.named("shop-service").inputs["template"]["maxInstanceRequestConcurrency"] == 5
    specs = [make_spec(f"q{i}", concurrency=400) for i in range(3)]
    capped = build(lambda: QueueRunApp("shop", **shop_args(app=StandInApp("shop", tuple(specs)))))
    assert capped.named("shop-service").inputs["template"]["maxInstanceRequestConcurrency"] == 1000


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
    envs = {
        e["name"]: e["value"]
        for e in g.named("shop-service").inputs["template"]["containers"][0]["envs"]
        if "value" in e
    }
    assert envs[ENV.PROJECT] == "other-project"
    assert envs[ENV.PUSH_AUDIENCE] == "queuerun:other-project:shop"
    datastore = g.named("shop-runtime-datastore").inputs
    assert datastore["project"] == "other-project"
    assert datastore["condition"]["expression"] == 'resource.name == "projects/other-project/databases/shop-queuerun"'


def test_operator_env_points_the_cli_at_the_deployed_app() -> None:
    seen: list[dict[str, str]] = []
    build(lambda: QueueRunApp("shop", **shop_args()).queuerun_env.apply(seen.append))
    assert seen == [
        {
            ENV.BACKEND: "gcp",
            ENV.PROJECT: PROJECT,
            ENV.FIRESTORE_DATABASE: "shop-queuerun",
            ENV.PUBSUB_ENDPOINT: "us-central1-pubsub.googleapis.com:443",
            ENV.APP: "main:app",
        }
    ]


def test_allowed_origins_reach_the_runtime_and_bad_ones_are_refused() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args(access="public", allowed_origins=["https://shop.example"])))
    envs = g.named("shop-service").inputs["template"]["containers"][0]["envs"]
    assert {e["name"]: e.get("value") for e in envs}[ENV.ALLOWED_ORIGINS] == "https://shop.example"
    # Without the argument the runtime admits its own origin only: nothing is set.
    assert ENV.ALLOWED_ORIGINS not in {e["name"] for e in graph_envs(build(lambda: QueueRunApp("shop", **shop_args())))}
    with pytest.raises(ConfigurationError, match="allowed_origins must be 'scheme://host\\[:port\\]'"):
        QueueRunApp("bad", **shop_args(allowed_origins=["https://shop.example/path"]))


def graph_envs(g: Graph) -> list[dict[str, Any]]:
    envs: list[dict[str, Any]] = g.named("shop-service").inputs["template"]["containers"][0]["envs"]
    return envs
