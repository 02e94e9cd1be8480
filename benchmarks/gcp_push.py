"""Benchmark: queuerun on the Pub/Sub emulator and its push server, as ratios to the bare equivalents.

    .venv/bin/python benchmarks/gcp_push.py [--messages 1200] [--requests 3000]

1. Push throughput into the Pub/Sub emulator (median of 3 interleaved rounds), 8 threads each
   pushing one job at a time and waiting for its id: queuerun standard queue vs the raw
   google-cloud-pubsub publisher (target >= 0.8x);
   queuerun FIFO with dedupe (a Firestore create and update per push) vs raw ordered publishing.
2. Push-server requests/s for a no-op job vs a bare Starlette endpoint doing the same envelope
   decode (target >= 0.7x), both under uvicorn in their own process, driven by an asyncio
   keep-alive client with 16 connections on loopback.
3. Cold start: process launch to the first 204 for a push, queuerun vs bare Starlette (median of 3;
   target < 300 ms more).

Everything listens on 127.0.0.1 only; every process started is stopped by its process group id.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import emulators  # noqa: E402

THREADS = 8

QUEUERUN_APP = """
from queuerun import App

app = App("bench", settings={"QUEUERUN_INSECURE_PUSH": "1", "GOOGLE_CLOUD_PROJECT": "bench-project"})

@app.queue("noop")
async def noop(job, meta):
    pass
"""

BARE_APP = """
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from queuerun.server.envelope import decode_push_envelope


async def push(request: Request) -> Response:
    decode_push_envelope(await request.body())
    return Response(status_code=204)


async def health(request: Request) -> Response:
    return Response("ok")


app = Starlette(routes=[Route("/_pubsub/{queue}", push, methods=["POST"]), Route("/_health", health)])
"""


def envelope() -> bytes:
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(b'{"to":"a@b.c","n":1}').decode(),
                "attributes": {"qr-content-type": "application/json", "qr-queue": "noop"},
                "messageId": "1",
                "publishTime": "2024-05-01T12:00:00Z",
            },
            "subscription": "projects/bench-project/subscriptions/bench-noop-sub",
        }
    ).encode()


def run_threads(n: int, work: Callable[[int], None]) -> float:
    per = n // THREADS
    threads = [threading.Thread(target=lambda i=i: [work(i * per + k) for k in range(per)]) for i in range(THREADS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (per * THREADS) / (time.perf_counter() - start)


def bench_push(messages: int, workdir: Path) -> list[tuple[str, float, float, str]]:
    from google.cloud import pubsub_v1

    from queuerun import App
    from queuerun.backends.gcp import make_publisher, make_subscriber
    from queuerun.emulator_topology import ensure_topology

    running = emulators.start_all(workdir)
    try:
        pubsub, firestore = running["pubsub"], running["firestore"]
        settings = {**emulators.emulator_env(pubsub, firestore), "QUEUERUN_BACKEND": "gcp"}
        app = App(f"b{uuid.uuid4().hex[:8]}", settings=settings)

        @app.queue("std")
        def std(job: object) -> None: ...

        @app.queue("ord.fifo")
        def ordered(job: object) -> None: ...

        created = ensure_topology(
            app, project=pubsub.project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub.host
        )
        topology = {t.queue: t.topic for t in created}
        # Publishing only: without subscriptions the emulator does not spend the machine on pushes.
        subscriber = make_subscriber(emulator_host=pubsub.host)
        for t in created:
            subscriber.delete_subscription(subscription=t.subscription)
        subscriber.close()
        app.backend.track_completions = False  # type: ignore[attr-defined]  # as in production
        raw: pubsub_v1.PublisherClient = make_publisher(emulator_host=pubsub.host)
        payload = {"to": "a@b.c", "body": "x" * 80}
        data = json.dumps(payload).encode()

        std.push(payload)  # warm both clients
        raw.publish(topology["std"], data).result()
        rates: dict[str, list[float]] = {"raw_std": [], "qr_std": [], "raw_fifo": [], "qr_fifo": []}
        for r in range(3):  # interleaved rounds: the emulator shares the machine, so take medians
            rates["raw_std"].append(run_threads(messages, lambda i: raw.publish(topology["std"], data).result()))
            rates["qr_std"].append(run_threads(messages, lambda i: std.push(payload)))
            rates["raw_fifo"].append(
                run_threads(
                    messages, lambda i: raw.publish(topology["ord.fifo"], data, ordering_key=f"g{i % 16}").result()
                )
            )
            rates["qr_fifo"].append(
                run_threads(messages, lambda i, r=r: ordered.group(f"g{i % 16}").dedupe(f"d{r}-{i}").push(payload))
            )
        raw_std, qr_std, raw_fifo, qr_fifo = (
            statistics.median(rates[k]) for k in ("raw_std", "qr_std", "raw_fifo", "qr_fifo")
        )
        raw.stop()
        app.backend.stop()
        return [
            ("push, standard queue (jobs/s)", qr_std, raw_std, ">= 0.8x"),
            ("push, FIFO + dedupe (jobs/s)", qr_fifo, raw_fifo, "-"),
        ]
    finally:
        for emulator in running.values():
            emulators.stop(emulator)


# -- push server ---------------------------------------------------------------------------------
def start_server(workdir: Path, kind: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{workdir}{os.pathsep}{ROOT / 'runtime'}", "PORT": str(port)}
    for name in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "K_SERVICE"):
        env.pop(name, None)
    if kind == "queuerun":
        argv = [sys.executable, "-m", "queuerun.server", "bench_queuerun:app"]
    else:
        argv = [sys.executable, "-m", "uvicorn", "bench_bare:app", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--log-level", "warning", "--no-access-log"]
    return subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def request_bytes(port: int) -> bytes:
    body = envelope()
    head = (
        f"POST /_pubsub/noop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes(port))
        await writer.drain()
        return await read_status(reader)
    finally:
        writer.close()


async def read_status(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(status_line.split()[1])


async def load(port: int, total: int, connections: int = 16) -> float:
    request = request_bytes(port)
    per = total // connections
    bad = 0

    async def worker() -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per):
            writer.write(request)
            await writer.drain()
            if await read_status(reader) != 204:
                bad += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    if bad:
        raise RuntimeError(f"{bad} requests did not get 204")
    return per * connections / elapsed


def wait_first_204(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            if asyncio.run(one(port)) == 204:
                return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError("server did not answer in time")


def bench_server(requests: int, workdir: Path) -> list[tuple[str, float, float, str]]:
    (workdir / "bench_queuerun.py").write_text(textwrap.dedent(QUEUERUN_APP))
    (workdir / "bench_bare.py").write_text(textwrap.dedent(BARE_APP))
    rates: dict[str, list[float]] = {"queuerun": [], "bare": []}
    starts: dict[str, list[float]] = {"queuerun": [], "bare": []}
    for _round in range(3):
        for kind in ("queuerun", "bare"):
            port = emulators.free_port()
            launched = time.perf_counter()
            process = start_server(workdir, kind, port)
            try:
                wait_first_204(port, process)
                starts[kind].append(time.perf_counter() - launched)
                asyncio.run(load(port, 300))  # warm-up
                rates[kind].append(asyncio.run(load(port, requests)))
            finally:
                stop_server(process)
    qr_rate, bare_rate = statistics.median(rates["queuerun"]), statistics.median(rates["bare"])
    qr_start, bare_start = statistics.median(starts["queuerun"]), statistics.median(starts["bare"])
    return [
        ("push server, no-op job (requests/s)", qr_rate, bare_rate, ">= 0.7x"),
        ("cold start to first 204 (ms)", qr_start * 1000, bare_start * 1000, "< +300 ms"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1200)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_push(args.messages, Path(tmp))
        rows += bench_server(args.requests, Path(tmp))
    print(f"{'measure':40} {'queuerun':>10} {'baseline':>10} {'ratio':>7}  target")
    for name, ours, base, target in rows:
        print(f"{name:40} {ours:10.1f} {base:10.1f} {ours / base:6.2f}x  {target}")


if __name__ == "__main__":
    main()
