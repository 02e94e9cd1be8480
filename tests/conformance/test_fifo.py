"""FIFO queues: one job at a time per group, in push order; groups run in parallel."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import defaultdict
from typing import Any

from queuerun import App, JobMetadata

from .harness import Harness


def test_each_group_runs_in_push_order_while_groups_overlap(harness: Harness, app_name: str) -> None:
    # Given 20 groups x 50 jobs (fewer on slow backends) and handlers with random delays
    groups = max(3, int(20 * harness.scale))
    per_group = max(4, int(50 * harness.scale))
    app = App(app_name)
    runs: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    lock = threading.Lock()
    running = 0
    peak = 0
    rng = random.Random(7)
    # Slow backends deliver few jobs at once (the emulator: 2), so their jobs take longer to overlap.
    low, high = (0.0, 0.004) if harness.scale >= 1 else (0.05, 0.15)
    delays = {(g, n): rng.uniform(low, high) for g in range(groups) for n in range(per_group)}

    @app.queue("profiles.fifo", concurrency=groups)
    def handler(job: dict[str, Any], meta: JobMetadata) -> None:
        nonlocal running, peak
        start = time.monotonic()
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(delays[(job["g"], job["n"])])
        with lock:
            running -= 1
            runs[meta.group_id or ""].append((job["n"], start, time.monotonic()))

    # When jobs of all groups are pushed interleaved
    with harness.run(app) as run:
        for n in range(per_group):
            for g in range(groups):
                handler.group(f"user-{g}").push({"g": g, "n": n})
        run.drain(timeout=120)

    # Then each group saw its jobs in push order, one at a time
    assert sorted(runs) == sorted(f"user-{g}" for g in range(groups))
    for group, seen in runs.items():
        assert [n for n, _, _ in seen] == list(range(per_group)), group
        for (_, _, end), (_, start, _) in itertools.pairwise(seen):
            assert start >= end, f"{group}: a job started before the previous one finished"
    # And jobs of different groups ran at the same moment
    assert peak > 1


def test_sequence_number_is_stable_across_redeliveries(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    seen: list[tuple[int, int | None]] = []

    @app.queue("again.fifo", min_backoff=0, max_backoff=0)
    def handler(job: str, meta: JobMetadata) -> None:
        seen.append((meta.received_count, meta.sequence_number))
        if meta.received_count < 3:
            raise RuntimeError("not yet")

    with harness.run(app) as run:
        handler.group("g").push("x")
        run.drain(timeout=60)
    assert [count for count, _ in seen] == [1, 2, 3]
    assert len({seq for _, seq in seen}) == 1 and seen[0][1] is not None


def test_sequence_numbers_increase_within_a_group(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    seen: dict[str, list[int]] = defaultdict(list)

    @app.queue("seq.fifo")
    def handler(job: int, meta: JobMetadata) -> None:
        assert meta.sequence_number is not None
        seen[meta.group_id or ""].append(meta.sequence_number)

    with harness.run(app) as run:
        for n in range(5):
            handler.group("a").push(n)
            handler.group("b").push(n)
        run.drain(timeout=60)
    for group in ("a", "b"):
        numbers = seen[group]
        assert len(numbers) == 5
        assert all(x < y for x, y in itertools.pairwise(numbers)), numbers


def test_a_failing_job_blocks_its_group_until_dead_lettered(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    events: list[tuple[str, Any]] = []
    lock = threading.Lock()

    @app.queue("orders.fifo", min_backoff=0, max_backoff=0, max_attempts=5)
    def handler(job: str, meta: JobMetadata) -> None:
        with lock:
            events.append((meta.group_id or "", job))
        if job == "poison":
            raise RuntimeError("cannot process poison")

    with harness.run(app) as run:
        handler.group("g1").push("poison")
        handler.group("g1").push("after")
        handler.group("g2").push("independent")
        run.drain(timeout=60)
        dead = run.dead_letters("orders.fifo")

    g1 = [job for group, job in events if group == "g1"]
    assert g1 == ["poison"] * 5 + ["after"]
    assert ("g2", "independent") in events
    assert [(d.payload, d.group_id, d.attempts) for d in dead] == [("poison", "g1", 5)]
    assert "cannot process poison" in dead[0].error
