"""Dedupe: same (queue, group, dedupe id) within the window queues one job."""

from __future__ import annotations

import threading
import time
from typing import Any

from queuerun import App, JobMetadata

from .harness import Harness


def _collecting_app(name: str, queue: str, **options: Any) -> tuple[App, Any, list[tuple[str | None, Any]]]:
    app = App(name)
    seen: list[tuple[str | None, Any]] = []
    lock = threading.Lock()

    @app.queue(queue, **options)
    def handler(job: Any, meta: JobMetadata) -> None:
        with lock:
            seen.append((meta.group_id, job))

    return app, handler, seen


def test_duplicate_push_returns_first_job_id_and_runs_once(harness: Harness, app_name: str) -> None:
    app, checkout, seen = _collecting_app(app_name, "checkout.fifo")
    with harness.run(app) as run:
        first = checkout.group("order-1").dedupe("order-1").push({"amount": 10})
        second = checkout.group("order-1").dedupe("order-1").push({"amount": 10, "double": "submit"})
        run.drain(timeout=60)
    assert second == first
    assert seen == [("order-1", {"amount": 10})]


def test_default_dedupe_id_is_a_hash_of_the_payload(harness: Harness, app_name: str) -> None:
    app, q, seen = _collecting_app(app_name, "jobs.fifo")
    with harness.run(app) as run:
        a = q.group("g").push({"x": 1, "y": 2})
        b = q.group("g").push({"y": 2, "x": 1})  # same payload, other key order
        c = q.group("g").push({"x": 1, "y": 3})
        run.drain(timeout=60)
    assert a == b != c
    assert sorted(job["y"] for _, job in seen) == [2, 3]


def test_dedupe_is_scoped_to_the_group(harness: Harness, app_name: str) -> None:
    app, q, seen = _collecting_app(app_name, "jobs.fifo")
    with harness.run(app) as run:
        a = q.group("g1").dedupe("same").push("x")
        b = q.group("g2").dedupe("same").push("x")
        run.drain(timeout=60)
    assert a != b
    assert sorted(g or "" for g, _ in seen) == ["g1", "g2"]


def test_same_dedupe_id_after_the_window_queues_again(harness: Harness, app_name: str) -> None:
    app, q, seen = _collecting_app(app_name, "jobs.fifo", dedupe_window=1)
    with harness.run(app) as run:
        a = q.group("g").dedupe("d").push("first")
        inside = q.group("g").dedupe("d").push("inside window")
        time.sleep(1.2)
        after = q.group("g").dedupe("d").push("after window")
        run.drain(timeout=60)
    assert inside == a
    assert after != a
    assert [job for _, job in seen] == ["first", "after window"]


def test_standard_queue_dedupes_only_explicit_ids(harness: Harness, app_name: str) -> None:
    app, q, seen = _collecting_app(app_name, "emails")
    with harness.run(app) as run:
        a = q.push("same body")
        b = q.push("same body")
        c = q.dedupe("welcome-42").push("welcome")
        d = q.dedupe("welcome-42").push("welcome")
        run.drain(timeout=60)
    assert a != b
    assert c == d
    assert sorted(job for _, job in seen) == ["same body", "same body", "welcome"]


def test_push_many_dedupes_within_the_batch(harness: Harness, app_name: str) -> None:
    app, q, seen = _collecting_app(app_name, "batch.fifo")
    with harness.run(app) as run:
        ids = q.group("g").push_many(["a", "b", "a"])
        run.drain(timeout=60)
    assert ids[0] == ids[2] != ids[1]
    assert [job for _, job in seen] == ["a", "b"]


def test_concurrent_pushes_of_one_dedupe_id_queue_one_job(harness: Harness, app_name: str) -> None:
    app, q, seen = _collecting_app(app_name, "race.fifo")
    ids: list[str] = []
    lock = threading.Lock()
    with harness.run(app) as run:

        def push() -> None:
            job_id = q.group("g").dedupe("once").push("payload")
            with lock:
                ids.append(job_id)

        threads = [threading.Thread(target=push) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        run.drain(timeout=60)
    assert len(ids) == 12 and len(set(ids)) == 1
    assert seen == [("g", "payload")]
