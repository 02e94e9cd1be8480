"""Push server with OIDC token verification on, against a bare Starlette endpoint doing the same decode.

    .venv/bin/python benchmarks/push_verified.py [--requests 3000] [--rounds 3]

Both run under uvicorn in their own process on loopback and are driven by the same asyncio
keep-alive client (16 connections). The queuerun side verifies every push's token in full
(``QUEUERUN_PUSH_AUTH=verify``) against certificates it fetched once and holds in its cache (a
stand-in for Google's certificate endpoint, signed by a key made here); every request carries the
same token, as Pub/Sub reuses one until it nears expiry. The bare side decodes the envelope and
answers 204. The push server without verification (as on the emulator) is measured too. Target
(issue 11): >= 0.8x. Median of interleaved rounds; numbers, not a pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from gcp_push import BARE_APP, ROOT, envelope, read_status, stop_server

sys.path.insert(0, str(ROOT / "tests"))
import emulators

AUDIENCE = "queuerun:bench-project:bench"
PUSH_SA = "bench-push@bench-project.iam.gserviceaccount.com"
KID = "bench-kid"

VERIFIED_APP = f"""
import json
from dataclasses import dataclass
from pathlib import Path

from queuerun import App
from queuerun.server.app import create_push_app
from queuerun.server.oidc import GoogleCerts, PushTokenVerifier

CERT = Path(__file__).with_name("cert.pem").read_text()


@dataclass
class Response:
    status: int
    headers: dict
    data: bytes


def certs_endpoint(url, method="GET", *, timeout=None, **_):
    body = json.dumps({{"{KID}": CERT}}).encode()
    return Response(200, {{"Cache-Control": "public, max-age=21600"}}, body)


queuerun_app = App("bench", settings={{"GOOGLE_CLOUD_PROJECT": "bench-project"}})


@queuerun_app.queue("noop")
async def noop(job, meta):
    pass


verifier = PushTokenVerifier(
    audience="{AUDIENCE}", service_account_email="{PUSH_SA}", certs=GoogleCerts(certs_endpoint)
)
app = create_push_app(queuerun_app, verifier=verifier)
"""


INSECURE_APP = """
from queuerun import App
from queuerun.server.app import create_push_app

queuerun_app = App("bench", settings={"QUEUERUN_INSECURE_PUSH": "1", "GOOGLE_CLOUD_PROJECT": "bench-project"})


@queuerun_app.queue("noop")
async def noop(job, meta):
    pass


app = create_push_app(queuerun_app)
"""


def make_key(workdir: Path) -> bytes:
    """A signing key and its certificate (written for the server); returns the private key PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (workdir / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def token(private_pem: bytes) -> str:
    from google.auth import crypt, jwt

    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": PUSH_SA,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
        "sub": "1",
    }
    signed: bytes = jwt.encode(crypt.RSASigner.from_string(private_pem, key_id=KID), claims)  # type: ignore[no-untyped-call]
    return signed.decode()


def start(workdir: Path, module: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{workdir}{os.pathsep}{ROOT / 'runtime'}"}
    for name in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "K_SERVICE", "QUEUERUN_INSECURE_PUSH"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "uvicorn", f"{module}:app", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--log-level", "warning", "--no-access-log"]
    return subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def request(port: int, bearer: str) -> bytes:
    body = envelope()
    head = (
        f"POST /_pubsub/noop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {bearer}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def load(port: int, bearer: str, total: int, connections: int = 16) -> float:
    raw = request(port, bearer)
    per = total // connections
    bad: list[int] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per):
            writer.write(raw)
            await writer.drain()
            status = await read_status(reader)
            if status != 204:
                bad.append(status)
        writer.close()

    begun = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - begun
    if bad:
        raise RuntimeError(f"{len(bad)} requests did not get 204 (first: {bad[0]})")
    return per * connections / elapsed


def wait_ready(port: int, bearer: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            asyncio.run(load(port, bearer, 1, connections=1))
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("server did not answer in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"verified": [], "insecure": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bearer = token(make_key(workdir))
        (workdir / "bench_verified.py").write_text(textwrap.dedent(VERIFIED_APP))
        (workdir / "bench_bare.py").write_text(textwrap.dedent(BARE_APP))
        (workdir / "bench_insecure.py").write_text(textwrap.dedent(INSECURE_APP))
        kinds = (("verified", "bench_verified"), ("insecure", "bench_insecure"), ("bare", "bench_bare"))
        for _round in range(args.rounds):
            for kind, module in kinds:
                port = emulators.free_port()
                process = start(workdir, module, port)
                try:
                    wait_ready(port, bearer, process)
                    asyncio.run(load(port, bearer, 300))  # warm-up
                    rates[kind].append(asyncio.run(load(port, bearer, args.requests)))
                finally:
                    stop_server(process)
    ours, base = statistics.median(rates["verified"]), statistics.median(rates["bare"])
    insecure = statistics.median(rates["insecure"])
    print(f"{'measure':58} {'req/s':>8} {'ratio':>7}  target")
    print(f"{'bare Starlette, same envelope decode':58} {base:8.0f} {'1.00x':>7}")
    print(f"{'push server, no-op job, token verified (cached certs)':58} {ours:8.0f} {ours / base:6.2f}x  >= 0.8x")
    print(f"{'push server, no-op job, no verification (emulator mode)':58} {insecure:8.0f} {insecure / base:6.2f}x")


if __name__ == "__main__":
    main()
