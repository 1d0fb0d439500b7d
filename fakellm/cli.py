"""Command line entry point: run the simulator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys

from aiohttp import web

from fakellm.behaviour import ReplaySource, SimConfig
from fakellm.replay import ReplayBook, parse_map
from fakellm.server import build_app

# Hung requests would otherwise hold shutdown for aiohttp's default 60 s.
SHUTDOWN_TIMEOUT_S = 1.0
LISTEN_BACKLOG = 2048


async def _run(host: str, port: int, config: SimConfig, replay: ReplayBook | None = None) -> None:
    """Serve until a termination signal arrives, then shut down cleanly."""
    runner = web.AppRunner(
        build_app(config, replay),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
        await site.start()
        bound_port = runner.addresses[0][1] if runner.addresses else port
        print(f"fake-llm listening on http://{host}:{bound_port}/v1", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(host: str, port: int, config: SimConfig, replay: ReplayBook | None = None) -> None:
    """Run the simulator on host:port until SIGTERM or SIGINT."""
    asyncio.run(_run(host, port, config, replay))


def _parser() -> argparse.ArgumentParser:
    """Build the argument parser of `python -m fakellm`."""
    parser = argparse.ArgumentParser(
        prog="fakellm", description="Simulated OpenAI-compatible LLM provider."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (0 = any free)")
    parser.add_argument(
        "--config", default=None, help="TOML file whose [simulator] table sets the behaviour"
    )
    parser.add_argument("--replay", default=None, help="CSV of recorded answers to replay (fakellm.replay)")
    parser.add_argument(
        "--replay-map", default=None, help="which simulated model replays which recorded one: SIM=RECORDED,..."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config and serve; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        config = SimConfig.from_toml(args.config) if args.config else SimConfig()
    except (OSError, ValueError) as error:  # TOMLDecodeError is a ValueError
        print(f"fakellm: cannot load config {args.config}: {error}", file=sys.stderr)
        return 2
    replay = None
    try:
        if args.replay or args.replay_map:
            if not (args.replay and args.replay_map):
                raise ValueError("--replay FILE and --replay-map SIM=RECORDED,... go together")
            config = dataclasses.replace(config, replay=ReplaySource(args.replay, parse_map(args.replay_map)))
        replay = ReplayBook.load(config.replay) if config.replay is not None else None
    except (OSError, ValueError) as error:
        print(f"fakellm: cannot load the replay file: {error}", file=sys.stderr)
        return 2
    try:
        serve(args.host, args.port, config, replay)
    except OSError as error:  # the address: in use, not this machine's, or a port below 1024
        print(f"fakellm: cannot listen on {args.host}:{args.port} ({error.strerror or error}); pick another --port "
              "(0: any free one) or stop what uses it", file=sys.stderr)
        return 2
    return 0
