"""Embedded backend against Dramatiq's in-memory broker, on the same no-op jobs, in one run.

    .venv/bin/python benchmarks/embedded_vs_dramatiq.py [--jobs 5000] [--queued 100000]

Each side pushes the jobs one at a time with its workers running, then waits until all ran:
queuerun's ``queue.push`` + ``local.drain()`` against Dramatiq's ``actor.send`` on a ``StubBroker``
with a ``Worker`` of 8 threads + ``broker.join``. Dramatiq is a dev dependency only
(``pip install dramatiq``); the script says so if it is missing. Targets (issue 11): standard >=
1.0x Dramatiq, FIFO over 100 groups >= 0.5x of that same Dramatiq figure, 100,000 queued jobs in
<= 40 MiB. Numbers, not a pass/fail.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time

from embedded_throughput import memory_for_queued

from queuerun import App


def dramatiq_rate(jobs: int) -> float:
    import dramatiq
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.worker import Worker

    broker = StubBroker()
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)

    @dramatiq.actor(max_retries=0, broker=broker)
    def noop(n: int) -> None:
        pass

    worker = Worker(broker, worker_threads=8)
    worker.start()
    try:
        start = time.perf_counter()
        for i in range(jobs):
            noop.send(i)
        broker.join(noop.queue_name)
        worker.join()
        return jobs / (time.perf_counter() - start)
    finally:
        worker.stop()
        broker.close()


def embedded_rate(jobs: int, *, fifo: bool, groups: int = 100) -> float:
    app = App("bench")

    @app.queue("work.fifo" if fifo else "work", concurrency=100)
    def noop(job: int) -> None:
        pass

    with app.local() as local:
        start = time.perf_counter()
        if fifo:
            for i in range(jobs):
                noop.group(f"g{i % groups}").push(i)
        else:
            for i in range(jobs):
                noop.push(i)
        local.drain(timeout=600)
        return jobs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--queued", type=int, default=100_000)
    args = parser.parse_args()
    try:
        import dramatiq  # noqa: F401
    except ImportError:
        sys.exit("this benchmark compares against Dramatiq: .venv/bin/pip install dramatiq")
    logging.disable(logging.INFO)  # one log line per job would measure the terminal
    base = dramatiq_rate(args.jobs)
    gc.collect()
    std = embedded_rate(args.jobs, fifo=False)
    gc.collect()
    fifo = embedded_rate(args.jobs, fifo=True)
    mib, per_job = memory_for_queued(args.queued)
    print(f"{'measure':<52} {'jobs/s':>10} {'ratio':>8} {'target':>8}")
    print(f"{'Dramatiq StubBroker + Worker(8 threads)':<52} {base:>10,.0f} {'1.00x':>8}")
    print(f"{'embedded standard, push one at a time, drain':<52} {std:>10,.0f} {std / base:>7.2f}x {'>= 1.0x':>8}")
    print(f"{'embedded FIFO, 100 groups, push one at a time':<52} {fifo:>10,.0f} {fifo / base:>7.2f}x {'>= 0.5x':>8}")
    print(f"memory for {args.queued:,} queued jobs: {mib:.1f} MiB ({per_job:,.0f} B/job), target <= 40 MiB")


if __name__ == "__main__":
    main()
