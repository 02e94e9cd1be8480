"""Benchmark: peak memory of the service under 8 concurrent maximum-size hostile bodies, per content type.

    .venv/bin/python benchmarks/hostile_memory.py [--concurrency 8] [--kinds json-objects,text,...]
        [--runtime PATH]   # another runtime tree (e.g. an older checkout's runtime/) to compare with

For each kind of body, a fresh push server (``python -m queuerun.server``, the image's command: one
uvicorn process on the gcp backend, as on Cloud Run) serves an ``http=True`` queue against the
Pub/Sub emulator (topic only). Eight clients post the body at once; the server's peak RSS
(``VmHWM`` in /proc/PID/status) is read after they are answered. Printed: idle RSS, peak RSS, the
answers, peak as a share of the Cloud Run memory setting (``QueueRunAppArgs.memory``, 512 MiB by
default) and peak over the same run with ``application/octet-stream`` bodies (kept as bytes,
nothing parsed): the baseline. Everything listens on 127.0.0.1; every process started is stopped
by its process group id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "runtime"))

import emulators  # noqa: E402
from gcp_push import read_status, stop_server  # noqa: E402
from http_enqueue import create_topic  # noqa: E402

MiB = 1024 * 1024
MAX_BODY = 5 * MiB  # App(http_max_body=...) default
SERVICE_MEMORY = 512 * MiB  # QueueRunAppArgs.memory default ("512Mi")
QUEUE = "tasks"

APP = """
import os

from queuerun import App

app = App(os.environ["BENCH_APP"], settings={**os.environ, "QUEUERUN_BACKEND": "gcp", "QUEUERUN_INSECURE_PUSH": "1"})

@app.queue("tasks", http=True, public=True)
def tasks(job):
    pass

app.backend.track_completions = False
"""


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b") -> bytes:
    out = bytearray()
    for head, data in parts:
        out += f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n"
    return bytes(out + f"--{boundary}--\r\n".encode())


def bodies() -> dict[str, tuple[str, bytes]]:
    """The costliest body of each content type at the 5 MiB limit (accepted or refused)."""
    obj = b'{"a":"' + b"x" * 36 + b'"},'
    field = b"f=" + b"x" * (MAX_BODY // 1000 - 8) + b"&"
    return {
        "octet-stream": ("application/octet-stream", b"\0" * (MAX_BODY - 1024)),
        "json-objects": ("application/json", b"[" + obj * 49_990 + b"1]"),
        "json-numbers": ("application/json", b"[" + b"1.5," * 49_990 + b"1]"),
        "json-empty-objects": ("application/json", b"[" + b"{}," * (MAX_BODY // 3 - 1) + b"{}]"),
        "json-deep": ("application/json", b"[" * (MAX_BODY // 2) + b"]" * (MAX_BODY // 2)),
        "json-string": (
            "application/json",
            json.dumps(["\U0001f600" * (MAX_BODY // 4 - 8)], ensure_ascii=False).encode(),
        ),
        "text": ("text/plain", "\U0001f600".encode() * (MAX_BODY // 4 - 256)),
        "form": ("application/x-www-form-urlencoded", field * 999 + b"f=x"),
        "form-many-fields": ("application/x-www-form-urlencoded", b"a&" * (MAX_BODY // 2 - 1) + b"a"),
        "multipart-file": (
            "multipart/form-data; boundary=b",
            _multipart([('Content-Disposition: form-data; name="f"; filename="a.bin"', b"\0" * (MAX_BODY - 1024))]),
        ),
        "multipart-fields": (
            "multipart/form-data; boundary=b",
            _multipart([('Content-Disposition: form-data; name="f"', b"y" * (MAX_BODY // 1000 - 80))] * 999),
        ),
        "multipart-empty-parts": ("multipart/form-data; boundary=b", b"--b\r\n\r\n\r\n" * (MAX_BODY // 11) + b"--b--"),
    }


def start(workdir: Path, runtime: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python -m queuerun.server bench_hostile:app``, the image's command, on 127.0.0.1:port."""
    argv = [sys.executable, "-m", "queuerun.server", "bench_hostile:app"]
    env = {**os.environ, **env, "PORT": str(port), "PYTHONPATH": f"{workdir}{os.pathsep}{runtime.resolve()}"}
    env.pop("K_SERVICE", None)  # off Cloud Run the server binds 127.0.0.1
    return subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


async def post(port: int, content_type: str, body: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST /queues/{QUEUE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        return await asyncio.wait_for(read_status(reader), timeout=600)
    finally:
        writer.close()


async def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(1200):
        if process.poll() is not None:
            raise RuntimeError(f"server exited during start-up (code {process.returncode})")
        try:
            if await post(port, "application/json", b'{"warm": 1}') == 202:
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("server did not answer 202 within 60 s")


def measure(
    workdir: Path, runtime: Path, env: dict[str, str], kind: str, concurrency: int
) -> tuple[int, int, Counter[int]]:
    content_type, body = bodies()[kind]
    port = emulators.free_port()
    process = start(workdir, runtime, port, env)
    try:
        asyncio.run(wait_ready(port, process))
        idle, _ = rss(process.pid)

        async def burst() -> list[int]:
            return list(await asyncio.gather(*(post(port, content_type, body) for _ in range(concurrency))))

        statuses = asyncio.run(burst())
        _, peak = rss(process.pid)
        return idle, peak, Counter(statuses)
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kinds", default=",".join(bodies()), help="comma-separated, from: " + ", ".join(bodies()))
    parser.add_argument("--runtime", type=Path, default=ROOT / "runtime", help="the runtime tree the server imports")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if "octet-stream" not in kinds:
        kinds.insert(0, "octet-stream")  # the baseline
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "bench_hostile.py").write_text(textwrap.dedent(APP))
        running = emulators.start_all(workdir, kinds=("pubsub",))
        try:
            pubsub = running["pubsub"]
            app_name = f"m{uuid.uuid4().hex[:8]}"
            create_topic(pubsub, app_name)
            for name in (
                "FIRESTORE_EMULATOR_HOST",
                "K_SERVICE",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "http_proxy",
                "https_proxy",
            ):
                os.environ.pop(name, None)
            env = {"PUBSUB_EMULATOR_HOST": pubsub.host, "GOOGLE_CLOUD_PROJECT": pubsub.project, "BENCH_APP": app_name}
            results = {kind: measure(workdir, args.runtime, env, kind, args.concurrency) for kind in kinds}
        finally:
            for emulator in running.values():
                emulators.stop(emulator)
    base_peak = results["octet-stream"][1]
    print(f"{args.concurrency} concurrent bodies of at most {MAX_BODY // MiB} MiB each; runtime {args.runtime}")
    print(f"{'body':22} {'bytes':>9} {'idle MiB':>9} {'peak MiB':>9} {'of 512Mi':>9} {'vs bytes':>9}  answers")
    for kind, (idle, peak, statuses) in results.items():
        size = len(bodies()[kind][1])
        answers = ", ".join(f"{n}x{status}" for status, n in sorted(statuses.items()))
        print(
            f"{kind:22} {size:9,} {idle / MiB:9.0f} {peak / MiB:9.0f} {peak / SERVICE_MEMORY:8.0%} "
            f"{peak / base_peak:8.2f}x  {answers}"
        )


if __name__ == "__main__":
    main()
