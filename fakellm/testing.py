"""Run the simulator as a real subprocess, for tests, demos and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The directory that contains the `fakellm` package, so `-m fakellm` finds this copy.
_PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SimServer:
    """A running `python -m fakellm` subprocess."""

    root: str
    process: subprocess.Popen[bytes]
    banner: str = ""
    returncode: int | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ending in /v1)."""
        return self.root + "/v1"

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """Send one JSON request; return (status, headers, decoded JSON body)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.root + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())

    def configure(self, behaviour: dict[str, Any]) -> None:
        """Replace the simulator's behaviour (a `[simulator]`-shaped table) and zero its counters."""
        for path, body in (("/_sim/config", behaviour), ("/_sim/reset", None)):
            code, _, answer = self.call("POST", path, body)
            if code != 200:
                raise RuntimeError(f"simulator {path} answered {code}: {answer}")

    def stats(self, calls: bool = True) -> dict[str, Any]:
        """The simulator's counters, with the list of billed calls and their times unless `calls` is false."""
        code, _, body = self.call("GET", f"/_sim/stats?calls={1 if calls else 0}")
        if code != 200:
            raise RuntimeError(f"simulator /_sim/stats answered {code}: {body}")
        return body  # type: ignore[no-any-return]


def _wait_until_ready(server: SimServer, timeout_s: float) -> None:
    """Poll GET /v1/models until it answers; fail if the process dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"fakellm exited early with code {server.process.returncode}")
        try:
            with urllib.request.urlopen(server.base_url + "/models", timeout=1) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            if error.code == 401:  # it answers, and asks for the API key its config names
                return
            time.sleep(0.05)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"fakellm did not answer within {timeout_s} s")


@contextlib.contextmanager
def running_server(
    config_path: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    stderr_path: str | Path | None = None,
    startup_timeout_s: float = 20.0,
) -> Iterator[SimServer]:
    """Start the simulator, yield it once it answers, then SIGTERM it and wait."""
    port = port if port is not None else free_port(host)
    command = [sys.executable, "-m", "fakellm", "--host", host, "--port", str(port)]
    if config_path is not None:
        command += ["--config", str(config_path)]
    path_entries = [str(_PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path_entries if p))
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(open(stderr_path, "wb")) if stderr_path else None
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr)
    server = SimServer(root=f"http://{host}:{port}", process=process)
    try:
        _wait_until_ready(server, startup_timeout_s)
        assert process.stdout is not None
        server.banner = process.stdout.readline().decode().strip()
        yield server
    finally:
        process.terminate()
        try:
            server.returncode = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            server.returncode = process.wait()
        if process.stdout is not None:
            process.stdout.close()
