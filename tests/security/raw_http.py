"""HTTP/1.1 requests written by hand: httpx merges repeated headers, an attacker does not."""

from __future__ import annotations

import socket


def raw_post(url: str, path: str, extra_headers: list[tuple[str, str]], body: bytes = b'{"n": 1}') -> bytes:
    """The raw answer to one POST carrying ``extra_headers`` as given, repeated names included."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in extra_headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall("\r\n".join(lines).encode() + body)
        chunks: list[bytes] = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
