"""Benchmark: HTTP enqueue requests/s, queuerun's endpoint vs a bare Starlette endpoint, as a ratio in one run.

    .venv/bin/python benchmarks/http_enqueue.py [--requests 3000] [--connections 16] [--rounds 3]

queuerun: the push server (``create_push_app``) with a standard ``http=True`` queue on the gcp
backend; ``POST /queues/tasks`` with a JSON body answers 202 once the job is published.
bare: a Starlette endpoint at the same path that parses the same JSON, publishes the same message
(data and attributes) with the raw google-cloud-pubsub client, and answers 202 with the message id.

Both run under the same uvicorn command line, each in its own process (and process group), against
one Pub/Sub emulator with only the topic created: no subscription, so the emulator spends nothing
on pushes. An asyncio client drives them with keep-alive connections on loopback; rounds alternate
between the two servers and each rate is the median of the rounds. Everything listens on
127.0.0.1 only; every process started is stopped by its process group id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import emulators  # noqa: E402
from gcp_push import read_status, stop_server  # noqa: E402

QUEUE = "tasks"
BODY = json.dumps({"to": "ada@example.com", "subject": "Welcome", "body": "x" * 80, "n": 1}).encode()

QUEUERUN_APP = """
import os

from queuerun import App
from queuerun.server.app import create_push_app

app = App(os.environ["BENCH_APP"], settings={**os.environ, "QUEUERUN_BACKEND": "gcp", "QUEUERUN_INSECURE_PUSH": "1"})

@app.queue("tasks", http=True)
def tasks(job):
    pass

app.backend.track_completions = False  # as in production (the emulator default keeps records for drain())
asgi = create_push_app(app)
"""

BARE_APP = """
import asyncio
import datetime as dt
import json
import os

from google.cloud import pubsub_v1
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

publisher = pubsub_v1.PublisherClient()  # PUBSUB_EMULATOR_HOST from the environment
TOPIC = os.environ["BENCH_TOPIC"]


async def enqueue(request: Request) -> JSONResponse:
    try:
        payload = json.loads(await request.body())
    except ValueError:
        return JSONResponse({"error": "malformed JSON"}, status_code=400)
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    attributes = {
        "qr-content-type": "application/json",
        "qr-queue": "tasks",
        "qr-queued-at": dt.datetime.now(dt.UTC).isoformat(),
    }
    job_id = await asyncio.wrap_future(publisher.publish(TOPIC, data, **attributes))
    return JSONResponse({"job_id": job_id, "queue": "tasks"}, status_code=202, headers={"x-job-id": job_id})


asgi = Starlette(routes=[Route("/queues/tasks", enqueue, methods=["POST"])])
"""


def start(workdir: Path, module: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``uvicorn module:asgi`` on 127.0.0.1:port, the same command line for both servers."""
    argv = [sys.executable, "-m", "uvicorn", f"{module}:asgi", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--log-level", "warning", "--no-access-log"]
    env = {**os.environ, **env, "PYTHONPATH": f"{workdir}{os.pathsep}{ROOT / 'runtime'}"}
    return subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def request_bytes(port: int) -> bytes:
    head = (
        f"POST /queues/{QUEUE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


async def load(port: int, total: int, connections: int) -> float:
    """Requests/s over ``connections`` keep-alive connections, one request in flight on each."""
    request = request_bytes(port)
    per = total // connections
    statuses: list[int] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(per):
                writer.write(request)
                await writer.drain()
                statuses.append(await read_status(reader))
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    bad = [s for s in statuses if s != 202]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(statuses)} requests did not get 202 (e.g. {bad[0]})")
    return len(statuses) / elapsed


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited during start-up (code {process.returncode})")
        try:
            asyncio.run(load(port, 1, 1))
            return
        except (OSError, RuntimeError, asyncio.IncompleteReadError):
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not answer 202 within {timeout:g} s")


def create_topic(pubsub: emulators.Emulator, app_name: str) -> str:
    """Only the topic: with no subscription the emulator does no push work during the run."""
    from queuerun.backends.gcp import make_publisher
    from queuerun.names import topic_id

    topic = f"projects/{pubsub.project}/topics/{topic_id(app_name, QUEUE)}"
    publisher = make_publisher(emulator_host=pubsub.host)
    publisher.create_topic(name=topic)
    publisher.stop()
    return topic


def bench(requests: int, connections: int, rounds: int, workdir: Path) -> dict[str, float]:
    (workdir / "bench_queuerun.py").write_text(textwrap.dedent(QUEUERUN_APP))
    (workdir / "bench_bare.py").write_text(textwrap.dedent(BARE_APP))
    running = emulators.start_all(workdir, kinds=("pubsub",))
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        pubsub = running["pubsub"]
        app_name = f"b{uuid.uuid4().hex[:8]}"
        topic = create_topic(pubsub, app_name)
        env = {
            "PUBSUB_EMULATOR_HOST": pubsub.host,
            "GOOGLE_CLOUD_PROJECT": pubsub.project,
            "BENCH_APP": app_name,
            "BENCH_TOPIC": topic,
        }
        for name in ("FIRESTORE_EMULATOR_HOST", "K_SERVICE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            os.environ.pop(name, None)  # loopback only, and no Cloud Run behaviour
        for kind in ("queuerun", "bare"):
            port = emulators.free_port()
            servers[kind] = (port, start(workdir, f"bench_{kind}", port, env))
        for port, process in servers.values():
            wait_ready(port, process)
            asyncio.run(load(port, 300, connections))  # warm-up
        rates: dict[str, list[float]] = {kind: [] for kind in servers}
        for _ in range(rounds):  # interleaved: the emulator and the client share the machine
            for kind, (port, _process) in servers.items():
                rates[kind].append(asyncio.run(load(port, requests, connections)))
        for kind, values in rates.items():
            print(f"  {kind:9} rounds: " + ", ".join(f"{v:.0f}" for v in values), file=sys.stderr)
        return {kind: statistics.median(values) for kind, values in rates.items()}
    finally:
        for _port, process in servers.values():
            stop_server(process)
        for emulator in running.values():
            emulators.stop(emulator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per round and server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rates = bench(args.requests, args.connections, args.rounds, Path(tmp))
    ours, base = rates["queuerun"], rates["bare"]
    print(f"{'measure':44} {'queuerun':>10} {'bare':>10} {'ratio':>7}")
    print(f"{'HTTP enqueue, standard queue, JSON (req/s)':44} {ours:10.1f} {base:10.1f} {ours / base:6.2f}x")


if __name__ == "__main__":
    main()
