"""A real `python -m webhook serve` in a subprocess, and a client that talks to it as the API server does."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def issue_certificates(out: Path, *extra: str) -> None:
    """Run the real `certs` command for a server on 127.0.0.1."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "certs",
            "--service",
            "multihome",
            "--namespace",
            "test",
            "--out",
            str(out),
            "--ip",
            "127.0.0.1",
            "--dns",
            "localhost",
            *extra,
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )


def client_context(ca: Path, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that verifies the server against our CA, as the API server does with caBundle."""
    context = ssl.create_default_context(cafile=str(ca))
    if maximum is not None:
        # OpenSSL 3 refuses TLS < 1.2 at its default security level on the client side too;
        # level 0 makes the client really offer the old version, so the server is what refuses.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    return context


@dataclass
class Server:
    """A running webhook server."""

    process: subprocess.Popen[bytes]
    port: int
    certs: Path
    log: Path

    @property
    def ca(self) -> Path:
        return self.certs / "ca.crt"

    def connect(self, timeout: float = 10) -> http.client.HTTPSConnection:
        """A keep-alive connection that verifies the server certificate."""
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=client_context(self.ca), timeout=timeout
        )

    def post(
        self,
        conn: http.client.HTTPSConnection,
        path: str,
        body: bytes | dict[str, Any],
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """POST and read the whole answer on `conn`; returns (status, decoded JSON)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={"Content-Type": content_type})
        response = conn.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None

    def get(self, path: str) -> tuple[int, bytes]:
        """GET on a fresh connection."""
        conn = self.connect()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


def _wait_for(server: Server, path: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode}:\n{server.log.read_text()[-4000:]}"
            )
        try:
            status, _ = server.get(path)
            if status == 200:
                return
        except (OSError, ssl.SSLError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready in time:\n{server.log.read_text()[-4000:]}")


@contextmanager
def running_server(
    workdir: Path, state: Path | None, *args: str, workers: int = 2, ready: bool = True
) -> Iterator[Server]:
    """Issue certificates, start the server on a free port, wait for /readyz; stop it afterwards.

    `state` is a directory of manifests; None leaves the state to `args` (`--kubeconfig`).
    With `ready=False` it waits only for the server to answer /healthz.
    """
    certs = workdir / "certs"
    if not (certs / "tls.crt").exists():
        issue_certificates(certs)
    port = free_port()
    log = workdir / f"server-{port}.log"
    env = {**os.environ, "MULTIHOME_TMP_DIR": str(workdir)}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webhook",
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                *(["--state", str(state)] if state else []),
                "--tls-cert",
                str(certs / "tls.crt"),
                "--tls-key",
                str(certs / "tls.key"),
                "--workers",
                str(workers),
                "--threads",
                "4",
                *args,
            ],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(process, port, certs, log)
    try:
        _wait_for(server, "/readyz" if ready else "/healthz", time.monotonic() + 30)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
