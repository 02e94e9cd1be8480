"""A 200-queue app builds under the mocks, quickly, with the expected resource count."""

from __future__ import annotations

import time

from queuerun.spec import make_spec
from queuerun_gcp import QueueRunApp

from .support import StandInApp, assert_least_privilege, build, shop_args

QUEUES = 200
PER_QUEUE = 8  # topic, dead-letter topic, 2 subscriptions, 4 IAM bindings
# 3 accounts, the Pub/Sub agent, service, database, 4 TTL fields, 9 APIs, source build (bucket, object,
# repository, image, 3 build grants), 3 app-level bindings, the user key (key, secret, version, reader);
# the component
PER_APP = 3 + 1 + 1 + 1 + 4 + 9 + 7 + 3 + 4 + 1


def test_two_hundred_queues() -> None:
    specs = tuple(make_spec(f"q{i:03d}.fifo" if i % 3 == 0 else f"q{i:03d}", http=i % 10 == 0) for i in range(QUEUES))
    started = time.perf_counter()
    g = build(lambda: QueueRunApp("big", **shop_args(app=StandInApp("big", specs))))
    elapsed = time.perf_counter() - started

    assert len(g.resources) == QUEUES * PER_QUEUE + PER_APP
    assert len(g.of_type("pubsub/subscription:Subscription")) == 2 * QUEUES
    assert sum(1 for s in g.of_type("Subscription") if s.inputs.get("enableMessageOrdering")) == 67
    assert_least_privilege(g, public=False)
    assert elapsed < 30, f"200 queues took {elapsed:.1f} s under mocks"
