"""A loopback TCP proxy in front of an emulator, for making it unreachable on demand."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

Mode = Literal["up", "refuse", "blackhole"]


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``target`` while up; closes new connections on "refuse";
    holds them open and silent on "blackhole". Connections opened while up are cut on a change."""

    def __init__(self, target: str, mode: Mode = "up") -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self.mode: Mode = mode
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: Mode) -> None:
        with self._lock:
            self.mode = mode
            open_now, self._open = self._open, []
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._stopped = True
        self.set("refuse")
        self._server.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                if mode != "refuse":
                    self._open.append(client)
            if mode == "refuse":
                client.close()
            elif mode == "up":
                try:
                    upstream = socket.create_connection(self._target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                with self._lock:
                    self._open.append(upstream)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()
