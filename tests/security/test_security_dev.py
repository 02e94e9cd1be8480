"""``queuerun dev`` keeps the deployed service's access rule unless told otherwise, and says which applies."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from tests.cli.dev_processes import spawn_dev, stop_group, wait_healthy

APP_SOURCE = """
from queuerun import App

app = App("devaccess")

@app.queue("closed", http=True)
def closed(payload):
    print("RAN closed", payload, flush=True)

@app.queue("open", http=True, public=True)
def open_(payload):
    print("RAN open", payload, flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, data=b'"hi"', headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as res:
            return int(res.status), res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_dev_refuses_anonymous_posts_to_queues_not_public_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "devaccess.py").write_text(APP_SOURCE)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    proc = spawn_dev(["devaccess:app", "--port", str(port), "--no-reload"], cwd=tmp_path, env=env)
    url = f"http://127.0.0.1:{port}/queues"
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=30)
        closed = _post(f"{url}/closed")
        opened = _post(f"{url}/open")
    finally:
        stop_group(proc)
    output = proc.stdout.read() if proc.stdout else ""
    assert closed[0] == 401 and "'closed' is not public" in json.loads(closed[1])["error"]
    assert opened[0] == 202
    assert "HTTP queues ['closed'] refuse anonymous posts (401)" in output
    assert "RAN closed" not in output
