"""docker-compose.yml: valid for `docker compose config`, and every command one that tierq really has.

The commands are parsed by the real command lines (tierq's click group, Celery's, Flower's options), so
a renamed option or subcommand fails here rather than in a user's container.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tierq.config import load_config
from tierq.contract import CLASSIFY_QUEUE

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
TIERQ_IMAGE = "tierq:latest"
WORKERS = {"worker-classify": "classify", "worker-hot": "hot", "worker-warm": "warm", "worker-cold": "cold"}
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def env_example() -> dict[str, str]:
    """The variables .env.example sets."""
    pairs = (
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: $$, ${X}, ${X:-default}, ${X-default}, ${X:?error}, ${X?error}."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3)
        current = env.get(name)
        missing = current is None or (current == "" and operator is not None and operator.startswith(":"))
        if missing and operator and operator.endswith("?"):
            raise ValueError(f"{name}: {argument}")
        return (argument if missing and operator else current) or ""

    return _VARIABLE.sub(substitute, value)


def services(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The compose file's services, anchors merged and variables substituted as compose would."""
    raw = yaml.safe_load(COMPOSE.read_text())
    result: dict[str, dict[str, Any]] = interpolate(raw["services"], env_example() if env is None else env)
    return result


def argv(command: str | list[str]) -> list[str]:
    """A command as compose runs it: a string is split like a shell would."""
    return shlex.split(command) if isinstance(command, str) else list(command)


def on_host(args: list[str], service: dict[str, Any]) -> list[str]:
    """Container paths of the service's bind mounts, mapped to the files in this checkout."""
    mounts = [volume.split(":")[:2] for volume in service.get("volumes", []) if volume.startswith(".")]
    mapped = []
    for arg in args:
        for source, target in mounts:
            if arg.startswith(target + "/"):
                arg = str(ROOT / source / arg[len(target) + 1 :])
        mapped.append(arg)
    return mapped


def resolve(group: click.Group, args: list[str], obj: Any = None) -> click.Context:
    """Parse `args` with the real click group, down to the leaf command; raises on anything unknown."""
    ctx = click.Context(group, obj=obj)
    while isinstance(ctx.command, click.Group):
        assert args, f"{ctx.command.name} needs a subcommand"
        found = ctx.command.get_command(ctx, args[0])
        assert found is not None, f"{ctx.command.name} has no command {args[0]!r}"
        if isinstance(found, click.Group):
            ctx = click.Context(found, parent=ctx, info_name=args[0], obj=obj)
        else:
            ctx = found.make_context(args[0], args[1:], parent=ctx)
        args = args[1:]
    return ctx


def parse_celery(args: list[str]) -> click.Context:
    """Parse a `celery -A workers ...` command with Celery's own command line (Flower's options included)."""
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery
    from flower.options import options as flower_options

    import workers

    assert args[:3] == ["celery", "-A", "workers"], f"{args}: tierq's Celery app is `celery -A workers`"
    ctx = resolve(celery, args[3:], CLIContext(app=workers.app, no_color=True, workdir=None, quiet=True))
    for option in ctx.params.get("tornado_argv", ()):
        name = option.lstrip("-").split("=", 1)[0].replace("-", "_")
        assert name in flower_options, f"Flower has no option --{name}"
    return ctx


def check_command(args: list[str], service: dict[str, Any]) -> click.Context:
    """Parse one service command (celery, tierq or python) with the program that will run it."""
    if args[0] == "celery":
        return parse_celery(args)
    assert args[0] == "tierq", f"{args}: a tierq service runs `celery -A workers ...` or `tierq ...`"
    from producer.cli import main

    return resolve(main, on_host(args[1:], service))


def test_the_compose_file_has_the_services_the_issue_names() -> None:
    found = services()
    assert set(found) >= {"redis", "postgres", "migrate", "flower", "fakellm", *WORKERS}
    assert found["fakellm"]["profiles"] == ["demo"]
    assert [name for name, svc in found.items() if svc.get("profiles")] == ["fakellm"]
    assert found["postgres"]["healthcheck"] and any(
        "/var/lib/postgresql/data" in v for v in found["postgres"]["volumes"]
    )
    assert found["redis"]["healthcheck"]


def test_every_tierq_command_is_one_the_project_has() -> None:
    checked = 0
    for name, service in services().items():
        if service.get("image") != TIERQ_IMAGE:
            continue
        check_command(argv(service["command"]), service)
        checked += 1
        test = service.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD-SHELL":
            check_command(argv(test[1]), service)
        elif test and test[1:3] == ["python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")
    assert checked == 8


def test_each_queue_has_its_own_worker_service_and_it_waits_for_its_dependencies() -> None:
    found = services()
    for config_file in ("example.toml", "sim.toml"):
        config = load_config(ROOT / "configs" / config_file)
        assert set(WORKERS.values()) == {CLASSIFY_QUEUE, *config.tier_names}, config_file
    for name, queue in WORKERS.items():
        service = found[name]
        params = parse_celery(argv(service["command"])).params
        assert params["queues"] == [queue]
        assert params["hostname"].startswith(f"{queue}@"), "unique per container, so the service scales"
        assert f"--destination {queue}@$HOSTNAME" in service["healthcheck"]["test"][1]
        assert "container_name" not in service and "ports" not in service, f"{name} must scale with --scale"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert {service["depends_on"][s]["condition"] for s in ("redis", "postgres")} == {"service_healthy"}
        assert service["stop_signal"] == "SIGTERM"
        assert int(service["stop_grace_period"].rstrip("s")) >= 60, "long enough for a running model call"


def test_flower_listens_on_5555_with_basic_auth_from_the_environment() -> None:
    flower = services()["flower"]
    assert parse_celery(argv(flower["command"])).params["tornado_argv"] == ("--port=5555", "--address=0.0.0.0")
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == env_example()["FLOWER_BASIC_AUTH"]
    assert flower["ports"][0].endswith(":5555")
    without_auth = {k: v for k, v in env_example().items() if k != "FLOWER_BASIC_AUTH"}
    with pytest.raises(ValueError, match="FLOWER_BASIC_AUTH"):
        services(without_auth)


def test_secrets_come_from_an_uncommitted_env_file() -> None:
    raw = COMPOSE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", raw))
    assert required <= set(env_example()), "every required variable has a line in .env.example"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and ".env" in (ROOT / ".dockerignore").read_text().splitlines()
    assert not re.search(r"(?i)(key|password|auth)\w*\s*[:=]\s*['\"]?[A-Za-z0-9_\-]{8,}", raw), "no secret in the file"


def _compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    compose = _compose()
    if compose is None:
        message = "`docker compose` is not installed (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    base = [*compose, "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    for profile in ([], ["--profile", "demo"]):
        done = subprocess.run(
            [*base, "--env-file", str(ENV_EXAMPLE), *profile, "config", "-q"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    # Each required variable, missing alone (compose names only one when several are, in no fixed order),
    # stops `config` with its own hint.
    required = dict(re.findall(r"\$\{(\w+):\?([^}]*)\}", COMPOSE.read_text()))
    assert {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"} <= set(required)
    env = {k: v for k, v in os.environ.items() if k not in required}
    for name, hint in required.items():
        without = tmp_path / f"without-{name}.env"
        without.write_text("".join(line for line in ENV_EXAMPLE.read_text().splitlines(keepends=True)
                                   if not line.startswith(f"{name}=")))
        done = subprocess.run([*base, "--env-file", str(without), "config", "-q"], capture_output=True, text=True,
                              env=env)
        assert done.returncode != 0 and f"required variable {name} is missing a value: {hint}" in done.stderr
