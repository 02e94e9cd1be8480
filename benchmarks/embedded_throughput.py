"""Embedded backend: jobs/s with no-op handlers (standard and FIFO) and memory for 100k queued jobs.

    .venv/bin/python benchmarks/embedded_throughput.py [--jobs 20000] [--queued 100000]

The baseline is the floor any in-process queue pays: stdlib ``queue.Queue`` feeding one worker
thread that calls the same no-op handler, measured in the same run. Numbers, not a pass/fail.
"""

from __future__ import annotations

import argparse
import gc
import os
import queue
import threading
import time

from queuerun import App


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def baseline(jobs: int) -> float:
    q: queue.Queue[object] = queue.Queue()
    done = threading.Event()
    count = 0

    def worker() -> None:
        nonlocal count
        while True:
            item = q.get()
            count += 1
            if count == jobs:
                done.set()
                return
            del item

    t = threading.Thread(target=worker)
    start = time.perf_counter()
    t.start()
    for i in range(jobs):
        q.put({"n": i})
    done.wait()
    return jobs / (time.perf_counter() - start)


def embedded(jobs: int, *, fifo: bool, groups: int = 100) -> float:
    app = App("bench")

    @app.queue("work.fifo" if fifo else "work", concurrency=100)
    def handler(job: dict[str, int]) -> None:
        pass

    with app.local() as local:
        start = time.perf_counter()
        batch = 500
        for base in range(0, jobs, batch):
            payloads = [{"n": i} for i in range(base, min(jobs, base + batch))]
            if fifo:
                for p in payloads:
                    handler.group(f"g{p['n'] % groups}").push(p)
            else:
                handler.push_many(payloads)
        local.drain(timeout=600)
        return jobs / (time.perf_counter() - start)


def memory_for_queued(n: int) -> tuple[float, float]:
    """MiB of RSS and bytes per job for n queued (not yet run) jobs of a small payload."""
    from queuerun.backends.embedded import EmbeddedBackend

    app = App("benchmem")

    @app.queue("waiting")
    def handler(job: dict[str, str]) -> None:
        pass

    backend = EmbeddedBackend()  # no workers started: jobs stay queued
    app.use_backend(backend)
    gc.collect()
    before = rss_mib()
    for base in range(0, n, 1000):
        handler.push_many([{"user": f"user-{i}", "action": "sync"} for i in range(base, min(n, base + 1000))])
    gc.collect()
    used = rss_mib() - before
    assert backend.store.pending_count() == n
    backend.close()
    return used, used * 2**20 / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--queued", type=int, default=100_000)
    args = parser.parse_args()

    base = baseline(args.jobs)
    std = embedded(args.jobs, fifo=False)
    fifo = embedded(args.jobs, fifo=True)
    mib, per_job = memory_for_queued(args.queued)
    print(f"{'measure':<44} {'value':>12} {'vs baseline':>12}")
    print(f"{'baseline: queue.Queue + 1 thread (jobs/s)':<44} {base:>12,.0f} {'1.00x':>12}")
    print(f"{'embedded standard, push_many (jobs/s)':<44} {std:>12,.0f} {std / base:>11.3f}x")
    print(f"{'embedded FIFO, 100 groups, push (jobs/s)':<44} {fifo:>12,.0f} {fifo / base:>11.3f}x")
    print(f"{f'memory for {args.queued:,} queued jobs (MiB)':<44} {mib:>12,.1f} {per_job:>10,.0f} B/job")


if __name__ == "__main__":
    main()
