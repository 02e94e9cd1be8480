"""Benchmark: the pull worker on the Pub/Sub emulator vs a bare google-cloud-pubsub streaming-pull subscriber.

    .venv/bin/python benchmarks/pull_worker.py [--messages 2000] [--rounds 3] [--concurrency 10]

Each round fills two subscriptions with the same number of messages (a queuerun pull queue's, and a
plain one), then times how long each consumer takes to run and acknowledge all of them, side by
side in one process against one emulator, rounds interleaved; the median of each is compared
(target >= 0.8x). Both get the same bound: ``FlowControl(max_messages=concurrency)`` and
``concurrency`` callback threads (the worker's own setting for a queue with that concurrency); the
bare callback only acks, the queuerun handler is a no-op sync function. The worker runs as in
production: no completion records on a standard queue (``track_completions=False``).

Everything listens on 127.0.0.1 only; the emulators are stopped by their process group.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import emulators  # noqa: E402

from queuerun import App  # noqa: E402
from queuerun.backends.gcp import GcpBackend, make_publisher, make_subscriber  # noqa: E402
from queuerun.emulator_topology import ensure_topology  # noqa: E402
from queuerun.worker import PullWorker  # noqa: E402


class Counter:
    def __init__(self, target: int) -> None:
        self.target, self.count = target, 0
        self.lock, self.done = threading.Lock(), threading.Event()

    def add(self) -> None:
        with self.lock:
            self.count += 1
            if self.count >= self.target:
                self.done.set()


def fill(publisher: object, topic: str, n: int) -> None:
    futures = [publisher.publish(topic, b'{"n": 1}') for _ in range(n)]  # type: ignore[attr-defined]
    for f in futures:
        f.result()


def bare_round(host: str, project: str, n: int, concurrency: int) -> float:
    from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler
    from google.cloud.pubsub_v1.types import FlowControl

    publisher, subscriber = make_publisher(emulator_host=host), make_subscriber(emulator_host=host)
    name = f"bare{uuid.uuid4().hex[:8]}"
    topic, sub = f"projects/{project}/topics/{name}", f"projects/{project}/subscriptions/{name}-sub"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request={"name": sub, "topic": topic, "ack_deadline_seconds": 60})
    fill(publisher, topic, n)
    counter = Counter(n)

    def callback(message: object) -> None:
        message.ack()  # type: ignore[attr-defined]
        counter.add()

    start = time.perf_counter()
    stream = subscriber.subscribe(
        sub,
        callback,
        flow_control=FlowControl(max_messages=concurrency),
        scheduler=ThreadScheduler(ThreadPoolExecutor(concurrency)),
    )
    counter.done.wait(300)
    took = time.perf_counter() - start
    stream.cancel()
    publisher.stop()
    return took


def queuerun_round(env: dict[str, str], host: str, project: str, n: int, concurrency: int) -> float:
    app = App(f"qr{uuid.uuid4().hex[:8]}", settings={**env, "QUEUERUN_BACKEND": "gcp"})
    counter = Counter(n)

    @app.queue("noop", delivery="pull", concurrency=concurrency)
    def noop(job: dict[str, int]) -> None:
        counter.add()

    app.use_backend(GcpBackend(project=project, app_name=app.name, pubsub_emulator_host=host, track_completions=False))
    ensure_topology(app, project=project, push_base_url="http://127.0.0.1:9", emulator_host=host)
    for start in range(0, n, 500):
        noop.push_many([{"n": 1}] * min(500, n - start))
    start_time = time.perf_counter()
    worker = PullWorker(app).start()
    counter.done.wait(300)
    took = time.perf_counter() - start_time
    worker.stop(grace=1)
    app.backend.stop()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        running = emulators.start_all(Path(tmp))
        try:
            pubsub = running["pubsub"]
            env = emulators.emulator_env(pubsub, running["firestore"])
            bare, ours = [], []
            for _ in range(args.rounds):
                bare.append(bare_round(pubsub.host, pubsub.project, args.messages, args.concurrency))
                ours.append(queuerun_round(env, pubsub.host, pubsub.project, args.messages, args.concurrency))
        finally:
            for emulator in running.values():
                emulators.stop(emulator)
    n = args.messages
    bare_rate, our_rate = n / statistics.median(bare), n / statistics.median(ours)
    print(f"{n} messages, concurrency {args.concurrency}, median of {args.rounds} interleaved rounds")
    print(f"  bare streaming-pull subscriber (ack only): {bare_rate:8.0f} msg/s  {[round(t, 2) for t in bare]}")
    print(f"  queuerun pull worker (no-op handler):      {our_rate:8.0f} msg/s  {[round(t, 2) for t in ours]}")
    print(f"  ratio queuerun / bare: {our_rate / bare_rate:.2f}x (target >= 0.8x)")


if __name__ == "__main__":
    main()
