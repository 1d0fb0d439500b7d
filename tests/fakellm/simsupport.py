"""What the simulator's endpoint tests share: one simulator per module, an SDK client per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai

from fakellm.testing import SimServer, running_server


def module_server(workdir: Path, config_toml: str | None = None) -> Iterator[SimServer]:
    """A simulator subprocess (with `config_toml` as its TOML, or the defaults) for a module's tests; it must
    exit cleanly at the end."""
    config = None
    if config_toml is not None:
        config = workdir / "tierq.toml"
        config.write_text(config_toml)
    with running_server(config, stderr_path=workdir / "stderr") as server:
        yield server
    assert server.returncode == 0, (workdir / "stderr").read_text()


def sdk_client(sim: SimServer, reset: bool = True) -> openai.OpenAI:
    """An OpenAI SDK client pointed at the simulator, with no retries; `reset` forgets earlier tests' calls,
    files and batches first."""
    if reset:
        assert sim.call("POST", "/_sim/reset")[0] == 200
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
