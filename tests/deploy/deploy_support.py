"""Helpers shared by the deployment tests: the `tierq` command, closed ports, variants of sim.toml."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from conftest import SIM_CONFIG

# The installed console script when there is one, so the tests run what users run.
_SCRIPT = Path(sys.executable).with_name("tierq")
TIERQ = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from producer.cli import main; main()"]


def closed_port() -> int:
    """A local TCP port that nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sim_variant(path: Path, *, provider: str = "", append: str = "") -> Path:
    """A copy of sim.toml at `path`, with lines added to [providers.sim] and at the end."""
    text = SIM_CONFIG.read_text()
    assert "[providers.sim]\n" in text
    text = text.replace("[providers.sim]\n", f"[providers.sim]\n{provider}\n", 1) + "\n" + append
    path.write_text(text)
    return path


def tierq(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `tierq ARGS` as a subprocess; `cwd` keeps a developer's .env out of the test."""
    return subprocess.run([*TIERQ, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
