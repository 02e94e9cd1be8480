"""What QueueRunApp deploys and what the emulator topology creates agree, option by option.

Both come from queuerun.topology.subscription_settings; the emulator may depart from it only
through the gaps named in EMULATOR_GAPS, applied here as overrides of the production settings.
"""

from __future__ import annotations

from typing import Any

import pytest

from queuerun.emulator_topology import subscription_request
from queuerun.spec import QueueSpec, make_spec
from queuerun.topology import EMULATOR_GAPS, subscription_settings
from queuerun_gcp import QueueRunApp

from .support import PROJECT, StandInApp, build, shop_args

BASE_URL = "http://127.0.0.1:8080"

# One queue per option value (and FIFO twins), so every option is projected at least once.
SPECS: tuple[QueueSpec, ...] = (
    make_spec("plain"),
    make_spec("short", timeout=1),
    make_spec("long", timeout=590),
    make_spec("once", max_attempts=1),
    make_spec("four", max_attempts=4),
    make_spec("many", max_attempts=100),
    make_spec("nobackoff", min_backoff=0, max_backoff=0),
    make_spec("halfsecond", min_backoff=0.5, max_backoff=1.5),
    make_spec("slowbackoff", min_backoff=600, max_backoff=600),
    make_spec("window", dedupe_window=3600),
    make_spec("web", http=True, public=True, accepts=["text/plain"]),
    make_spec("narrow", concurrency=1),
    make_spec("pulled", delivery="pull", timeout=3600),
    make_spec("exact", delivery="pull", exactly_once=True),
    make_spec("ordered.fifo", min_backoff=0.5, max_attempts=2),
    make_spec("exact.fifo", delivery="pull", exactly_once=True),
)


def _seconds(text: str) -> float:
    return float(text.removesuffix("s"))


def _duration(value: dict[str, int]) -> float:
    return value.get("seconds", 0) + value.get("nanos", 0) / 1e9


def _deployed(sub: dict[str, Any], service_uri: str) -> dict[str, Any]:
    dead = sub.get("deadLetterPolicy")
    push = sub.get("pushConfig")
    return {
        "name": sub["name"],
        "topic": sub["topic"],
        "ack_deadline": int(sub["ackDeadlineSeconds"]),
        "ordering": sub["enableMessageOrdering"],
        "exactly_once": sub["enableExactlyOnceDelivery"],
        "min_backoff": _seconds(sub["retryPolicy"]["minimumBackoff"]),
        "max_backoff": _seconds(sub["retryPolicy"]["maximumBackoff"]),
        "dead_letter": None if dead is None else (dead["deadLetterTopic"], int(dead["maxDeliveryAttempts"])),
        "push_route": None if push is None else push["pushEndpoint"].removeprefix(service_uri),
        "expires": sub["expirationPolicy"] != {"ttl": ""},
    }


def _emulated(request: dict[str, Any]) -> dict[str, Any]:
    dead, push = request.get("dead_letter_policy"), request["push_config"]
    return {
        "name": request["name"].rsplit("/", 1)[1],
        "topic": request["topic"],
        "ack_deadline": request["ack_deadline_seconds"],
        "ordering": request["enable_message_ordering"],
        "exactly_once": request.get("enable_exactly_once_delivery", False),
        "min_backoff": _duration(request["retry_policy"]["minimum_backoff"]),
        "max_backoff": _duration(request["retry_policy"]["maximum_backoff"]),
        "dead_letter": None if dead is None else (dead["dead_letter_topic"], dead["max_delivery_attempts"]),
        "push_route": push["push_endpoint"].removeprefix(BASE_URL) if push else None,
        "expires": request["expiration_policy"] != {},
    }


def _with_emulator_gaps(deployed: dict[str, Any], spec: QueueSpec) -> dict[str, Any]:
    expected = dict(deployed)
    if spec.fifo:  # EMULATOR_GAPS["fifo_dead_letter_policy"]
        expected["dead_letter"] = None
    return expected


@pytest.fixture(scope="module")
def deployed() -> dict[str, dict[str, Any]]:
    graph = build(lambda: QueueRunApp("shop", **shop_args(app=StandInApp("shop", SPECS), access="public")))
    uri = graph.named("shop-service").outputs["uri"]
    subs = [r.inputs for r in graph.of_type("pubsub/subscription:Subscription")]
    return {s["name"]: _deployed(s, uri) for s in subs if not s["name"].endswith("-dlq-sub")}


def test_the_gaps_are_the_named_ones() -> None:
    assert set(EMULATOR_GAPS) == {"fifo_dead_letter_policy"}


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_emulator_and_deployment_agree_but_for_the_named_gaps(spec: QueueSpec, deployed: dict[str, Any]) -> None:
    settings = subscription_settings("shop", spec)
    emulated = _emulated(subscription_request(PROJECT, settings, push_base_url=BASE_URL))
    assert emulated == _with_emulator_gaps(deployed[settings.subscription_id], spec)


def test_sub_second_backoff_is_the_same_everywhere() -> None:
    # It drifted: 0 s on the emulator, "0.5s" deployed, 0.5 s embedded.
    spec = make_spec("q", min_backoff=0.5, max_backoff=1)
    request = subscription_request(PROJECT, subscription_settings("shop", spec), push_base_url=BASE_URL)
    assert request["retry_policy"]["minimum_backoff"] == {"seconds": 0, "nanos": 500_000_000}
    assert spec.backoff(1) == 0.5


def test_max_attempts_below_5_keep_pubsubs_backstop_at_its_minimum() -> None:
    policy = [subscription_settings("a", make_spec("q", max_attempts=n)).max_delivery_attempts for n in (1, 4, 5, 100)]
    assert policy == [5, 5, 5, 100]
