"""QueueRunApp refuses bad declarations at construction, naming queue, field, range and value.

One test per rule; then: every problem is reported at once, nothing is registered, and values not
known yet (``pulumi.Output``) are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest

from queuerun.errors import ConfigurationError
from queuerun.spec import QueueSpec, make_spec
from queuerun_gcp import QueueRunApp, QueueRunAppArgs

from .support import APP_SOURCE, Mocks, StandInApp, build, shop_args


def problems_of(**overrides: Any) -> tuple[str, ...]:
    with pytest.raises(ConfigurationError) as caught:
        QueueRunApp("shop", **shop_args(**overrides))
    return caught.value.problems


def one_problem(**overrides: Any) -> str:
    problems = problems_of(**overrides)
    assert len(problems) == 1, problems
    assert problems[0].startswith("QueueRunApp 'shop': ")
    return problems[0]


def queues(*specs: dict[str, Any]) -> dict[str, Any]:
    return {"app": None, "queues": list(specs)}


pytestmark = pytest.mark.usefixtures("mocks")


# --- queue declarations ------------------------------------------------------------------------


def test_queue_name_that_maps_to_no_valid_id() -> None:
    problem = one_problem(**queues({"name": "bad name!"}))
    assert "'bad name!'" in problem and "letters, digits" in problem


@pytest.mark.parametrize("timeout", [591, 600, 601])
def test_push_timeout_leaves_the_server_time_to_answer_inside_the_ack_deadline(timeout: int) -> None:
    problem = one_problem(**queues({"name": "slow", "timeout": timeout}))
    assert "'slow'" in problem and f"at most 590, got {timeout}" in problem
    assert "ack deadline" in problem and "600 s" in problem


@pytest.mark.parametrize("attempts", [0, 101])
def test_max_attempts_outside_1_to_100(attempts: int) -> None:
    problem = one_problem(**queues({"name": "emails", "max_attempts": attempts}))
    assert "'emails'" in problem and "max_attempts" in problem and "1 and 100" in problem and str(attempts) in problem


@pytest.mark.parametrize(("option", "value"), [("min_backoff", -1), ("max_backoff", 601)])
def test_backoff_outside_0_to_600_seconds(option: str, value: int) -> None:
    problem = one_problem(**queues({"name": "emails", option: value}))
    assert option in problem and "600" in problem and str(value) in problem


def test_exactly_once_with_push_delivery() -> None:
    problem = one_problem(**queues({"name": "emails", "exactly_once": True}))
    assert "exactly_once" in problem and "pull" in problem


def test_spec_built_without_validation_is_still_checked() -> None:
    # QueueSpec's constructor does not validate; the component must not trust it.
    app = StandInApp("shop", (QueueSpec("emails", exactly_once=True, max_attempts=0),))
    problems = problems_of(app=app)
    assert any("exactly_once" in p for p in problems) and any("max_attempts" in p for p in problems)


def test_public_without_http() -> None:
    problem = one_problem(**queues({"name": "emails", "public": True}))
    assert "public=True needs http=True" in problem and "'emails'" in problem


def test_queue_declared_twice() -> None:
    problem = one_problem(**queues({"name": "emails"}, {"name": "emails"}))
    assert "declared twice" in problem


def test_app_name_whose_topic_ids_are_reserved() -> None:
    problems = problems_of(app=StandInApp("goog", (make_spec("emails"),)))
    assert problems and all("'goog" in p and "Pub/Sub id" in p for p in problems)


def test_app_name_invalid_for_cloud_run() -> None:
    problem = one_problem(app=StandInApp("Shop_App", (make_spec("emails"),)))
    assert "'Shop_App'" in problem and "lowercase" in problem


def test_app_without_queues() -> None:
    assert "declares no queues" in one_problem(app=StandInApp("shop", ()))


def test_queue_spec_without_name() -> None:
    assert "has no 'name'" in one_problem(**queues({"timeout": 10}))


# --- where the declarations come from ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{"app": None}, {"queues": [{"name": "emails"}]}],
    ids=["none", "two"],
)
def test_exactly_one_of_app_manifest_queues(overrides: dict[str, Any]) -> None:
    assert "exactly one of app=, manifest= or queues=" in one_problem(**overrides)


def test_app_name_only_with_queues() -> None:
    assert "app_name is only used with queues=" in one_problem(app_name="other")


def test_unreadable_manifest(tmp_path: Path) -> None:
    path = tmp_path / "queuerun.json"
    path.write_text("{not json")
    problem = one_problem(app=None, manifest=str(path))
    assert str(path) in problem


def test_unknown_argument() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown arguments \['imagee'\]"):
        QueueRunApp("shop", **shop_args(imagee="x"))


# --- the service -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{"image": "gcr.io/p/i"}, {"source": None}],
    ids=["both", "neither"],
)
def test_source_and_image_both_or_neither(overrides: dict[str, Any]) -> None:
    assert "exactly one of source= (a directory to build) or image=" in one_problem(**overrides)


def test_source_that_is_not_a_directory(tmp_path: Path) -> None:
    problem = one_problem(source=str(tmp_path / "missing"))
    assert "source must be an existing directory" in problem and "missing" in problem


def test_region_missing_without_gcp_config() -> None:
    assert "region is required" in one_problem(region=None)


def test_region_malformed() -> None:
    assert "'US Central'" in one_problem(region="US Central")


def test_cloud_run_timeout_shorter_than_an_ack_deadline() -> None:
    problem = one_problem(request_timeout=120)
    # shop's largest ack deadline: timeout 300 s + 10 s margin
    assert "request_timeout" in problem and "310 s" in problem and "got 120" in problem


def test_cloud_run_timeout_over_3600() -> None:
    assert "between 1 and 3600, got 3601" in one_problem(request_timeout=3601)


def test_scaling_bounds() -> None:
    assert "min_instances must be between 0 and 1000, got -1" in one_problem(min_instances=-1)
    assert "max_instances must be at least min_instances (5), got 2" in one_problem(min_instances=5, max_instances=2)
    assert "container_concurrency must be between 1 and 1000, got 0" in one_problem(container_concurrency=0)


def test_app_target_format() -> None:
    assert "app_target must be 'module:attribute'" in one_problem(app_target="main.app")


def test_env_may_not_override_runtime_settings() -> None:
    assert "QUEUERUN_BACKEND" in one_problem(env={"QUEUERUN_BACKEND": "embedded"})


def test_firestore_database_id_format() -> None:
    assert "firestore_database must be '(default)'" in one_problem(firestore_database="DB")


# --- all at once, nothing half-built ---------------------------------------------------------------


def test_every_problem_is_reported_at_once(mocks: Mocks) -> None:
    problems = problems_of(
        app=None,
        queues=[{"name": "slow", "timeout": 900, "max_attempts": 0}, {"name": "x y"}],
        image="gcr.io/p/i",
        request_timeout=0,
    )
    joined = "\n".join(problems)
    for expected in ("timeout", "max_attempts", "'x y'", "source= (a directory to build) or image=", "request_timeout"):
        assert expected in joined
    assert len(problems) == 5
    assert mocks.inputs == {}  # refused before anything was registered


def test_args_object_and_keywords_combine() -> None:
    args = QueueRunAppArgs(**shop_args())
    with pytest.raises(ConfigurationError, match="request_timeout"):
        QueueRunApp("shop", args, request_timeout=5)


def test_values_not_known_yet_are_skipped() -> None:
    unknown = pulumi.Output.from_input
    g = build(
        lambda: QueueRunApp(
            "shop",
            **shop_args(
                source=None,
                image=unknown("gcr.io/p/i"),
                region=unknown("europe-west1"),
                request_timeout=unknown(400),
                app=None,
                queues=[{"name": "emails", "timeout": unknown(100), "max_attempts": unknown(7)}],
            ),
        )
    )
    sub = g.named("shop-emails-sub").inputs
    assert (sub["ackDeadlineSeconds"], sub["deadLetterPolicy"]["maxDeliveryAttempts"]) == (110, 7)
    assert g.named("shop-service").inputs["location"] == "europe-west1"


def test_options_that_decide_the_resources_must_be_known() -> None:
    problem = one_problem(**queues({"name": "emails", "delivery": pulumi.Output.from_input("pull")}))
    assert "delivery must be known at construction" in problem


def test_a_valid_app_builds() -> None:
    # The negative tests above are only meaningful if the baseline passes.
    g = build(lambda: QueueRunApp("shop", **shop_args(source=str(APP_SOURCE))))
    assert g.named("shop-service")
