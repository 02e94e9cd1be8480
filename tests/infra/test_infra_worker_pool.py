"""QueueRunApp deploys pull queues' consumer: a Cloud Run worker pool running ``queuerun worker``."""

from __future__ import annotations

from typing import Any

import pytest

from queuerun import names
from queuerun.errors import ConfigurationError
from queuerun.settings import ENV
from queuerun.spec import make_spec
from queuerun_gcp import QueueRunApp
from queuerun_gcp.worker_pool import WORKER_COMMAND

from .support import PROJECT, Graph, StandInApp, assert_least_privilege, build, shop_args, shop_specs

RUNTIME_EMAIL = f"shop-runtime@{PROJECT}.iam.gserviceaccount.com"
RUNTIME = f"serviceAccount:{RUNTIME_EMAIL}"
POOL_TYPE = "gcp:cloudrunv2/workerPool:WorkerPool"


def _with_pull(**overrides: Any) -> Graph:
    specs = (*shop_specs(), make_spec("ledger.fifo", delivery="pull", exactly_once=True, timeout=1800, concurrency=4))
    return build(lambda: QueueRunApp("shop", **shop_args(app=StandInApp("shop", specs), **overrides)))


def test_pull_queues_get_a_worker_pool_running_the_worker_as_the_runtime_account() -> None:
    g = _with_pull()
    [pool] = g.of_type(POOL_TYPE)
    inputs = pool.inputs
    assert (inputs["name"], inputs["location"]) == ("shop-worker", "us-central1")
    assert inputs["scaling"] == {"scalingMode": "MANUAL", "manualInstanceCount": 1}
    template = inputs["template"]
    assert template["serviceAccount"] == RUNTIME_EMAIL
    [container] = template["containers"]
    assert container["commands"] == list(WORKER_COMMAND)
    service = g.named("shop-service").inputs["template"]["containers"][0]
    assert container["image"] == service["image"]  # the same build
    assert container["envs"] == service["envs"]  # the same settings, the user key from the same secret
    env = {e["name"]: e.get("value", e.get("valueSource")) for e in container["envs"]}
    assert env[ENV.BACKEND] == "gcp"
    assert env[ENV.USER_KEY]["secretKeyRef"]["secret"] == "shop-user-key"
    assert env[ENV.PUBSUB_ENDPOINT] == "us-central1-pubsub.googleapis.com:443"


def test_runtime_account_subscribes_to_the_pull_subscription_only() -> None:
    g = _with_pull()
    subscribers = [r.inputs for r in g.of_type("SubscriptionIAMMember") if r.inputs["member"] == RUNTIME]
    slug = names.resource_slug("ledger.fifo")
    granted = [(s["subscription"], s["role"]) for s in subscribers]
    assert granted == [("shop-ledger.fifo-sub", "roles/pubsub.subscriber")]
    sub = g.named(f"shop-{slug}-sub").inputs
    assert sub["enableExactlyOnceDelivery"] is True and "pushConfig" not in sub
    assert_least_privilege(g, public=False)


def test_worker_pool_autoscales_between_the_given_counts() -> None:
    [pool] = _with_pull(worker_instances=2, worker_max_instances=6).of_type(POOL_TYPE)
    assert pool.inputs["scaling"] == {"scalingMode": "AUTOMATIC", "minInstanceCount": 2, "maxInstanceCount": 6}


def test_an_app_without_pull_queues_gets_no_worker_pool() -> None:
    g = build(lambda: QueueRunApp("shop", **shop_args()))
    assert g.of_type(POOL_TYPE) == []


@pytest.mark.usefixtures("mocks")
@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"worker_instances": 0}, "worker_instances must be between 1 and 1000, got 0"),
        (
            {"worker_instances": 3, "worker_max_instances": 2},
            "worker_max_instances must be at least worker_instances (3), got 2",
        ),
    ],
)
def test_bad_worker_counts_are_refused_naming_the_argument(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        QueueRunApp("shop", **shop_args(**overrides))
    assert any(says in p for p in caught.value.problems), caught.value.problems
