"""The golden snapshot of the shop graph: any change to a resource, a property or a name shows here.

Child names and properties are part of the contract once released, so the snapshot changes only on
purpose: regenerate with ``QUEUERUN_UPDATE_SNAPSHOTS=1 pytest tests/infra/test_infra_snapshot.py``
and review the diff.
"""

from __future__ import annotations

import os

from queuerun_gcp import QueueRunApp

from .support import SNAPSHOTS, build, shop_args

UPDATE_FLAG = "QUEUERUN_UPDATE_SNAPSHOTS"


def test_shop_graph_matches_the_golden_snapshot() -> None:
    path = SNAPSHOTS / "shop.json"
    actual = build(lambda: QueueRunApp("shop", **shop_args())).snapshot()
    if os.environ.get(UPDATE_FLAG) == "1":
        # Rewriting the snapshot makes the comparison below pass by construction: never in CI.
        assert os.environ.get("CI", "").lower() not in ("true", "1"), f"{UPDATE_FLAG} is set in CI"
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"no snapshot at {path}: run with {UPDATE_FLAG}=1 once and review it"
    assert actual == path.read_text(encoding="utf-8"), f"graph changed; if on purpose, rerun with {UPDATE_FLAG}=1"


def test_snapshot_is_stable_across_builds() -> None:
    first = build(lambda: QueueRunApp("shop", **shop_args())).snapshot()
    second = build(lambda: QueueRunApp("shop", **shop_args())).snapshot()
    assert first == second
