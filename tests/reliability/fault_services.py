"""Services a fault test can break on purpose: a throwaway Redis, a TCP proxy, a RabbitMQ vhost.

Each belongs to one test, so stopping it, cutting it or deleting it leaves every other test alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
from conftest import _unavailable

from fakellm.testing import free_port

RABBITMQ_URL = os.environ.get("TIERQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")


class RedisServer:
    """A `redis-server` in a temporary directory whose AOF survives a restart (fsync on every write),
    as a production broker's Redis must: without persistence a restart loses every queued message."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("redis-server (to start a throwaway Redis)", FileNotFoundError("redis-server"))
        self.binary = str(binary)
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on the same port and directory as before, and wait until it answers."""
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 20
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass  # still reading its AOF back
                except redis.exceptions.ConnectionError:
                    assert self.proc.poll() is None, (self.dir / "redis.log").read_text(errors="replace")
                assert time.monotonic() < deadline, "redis-server did not answer within 20 s"
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: Redis closes every client connection and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def evicting_redis(workdir: Path) -> Iterator[str]:
    """A Redis of the test's own that evicts keys at maxmemory (`allkeys-lru`), as an operator may have set
    one up: its URL, the server stopped afterwards."""
    workdir.mkdir(exist_ok=True)
    server = RedisServer(workdir)
    server.start()
    admin = redis.Redis.from_url(server.url)
    try:
        admin.config_set("maxmemory", "200mb")
        admin.config_set("maxmemory-policy", "allkeys-lru")
        yield server.url
    finally:
        admin.close()
        server.stop()


class TcpProxy:
    """A TCP proxy to `port` on this machine, served by a thread of the test process.

    `cut()` drops every proxied connection and closes the listening socket, so new connections are
    refused (what clients see when a database restarts); `resume()` listens again on the same port.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> None:
        """Listen on `self.port`."""
        self._thread.start()
        self.resume()

    def resume(self) -> None:
        """Accept connections again."""
        self._run(self._listen())

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        self._run(self._cut())

    def close(self) -> None:
        """Cut everything and stop the thread."""
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # cut while this connection was being made
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.connections += 1
        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass  # the other side went away (or the proxy cut it): this direction is over either way
    finally:
        writer.close()


def _port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this test (its queues are nobody else's), deleted afterwards; yields its URL."""
    if not _port_open("127.0.0.1", 5672):
        _unavailable("RabbitMQ", ConnectionRefusedError(f"nothing listens at {RABBITMQ_URL}"))
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        _unavailable("rabbitmqctl (to create a vhost for the test)", FileNotFoundError("rabbitmqctl"))
    vhost = f"tierq-test-{uuid.uuid4().hex[:10]}"

    def run(*args: str) -> None:
        done = subprocess.run([str(ctl), *args], capture_output=True, timeout=60)
        assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr.decode(errors='replace')}"

    run("add_vhost", vhost)
    try:
        run("set_permissions", "-p", vhost, urlparse(RABBITMQ_URL).username or "guest", ".*", ".*", ".*")
        yield f"{RABBITMQ_URL}/{vhost}"
    finally:
        run("delete_vhost", vhost)
