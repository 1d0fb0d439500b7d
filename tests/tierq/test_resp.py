"""The small Redis client `tierq status` reads through (tierq.resp) answers as redis-py does, on a real
Redis, for every call Presence and LiveMessages make; it selects the URL's database, and its errors are one
clear message without the password."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import RedisDbs

from tierq.live import LiveMessages
from tierq.presence import Presence
from tierq.resp import ReadClient, RespError, client_for


@pytest.fixture()
def spare(redis_dbs: RedisDbs) -> Iterator[tuple[str, redis.Redis]]:
    url = redis_dbs.url(4)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url, client
    client.flushdb()
    client.close()


def _light(url: str) -> ReadClient:
    light = client_for(url)
    assert light is not None
    return light


def test_it_reads_what_redis_py_reads(spare: tuple[str, redis.Redis]) -> None:
    url, full = spare
    workers = {f"w{n}@host": {"queues": ["hot", "warm"] if n % 2 else ["cold"], "digest": "d", "pid": n}
               for n in range(1500)}
    with full.pipeline(transaction=False) as pipe:
        for name, info in workers.items():
            pipe.set(f"tq:w:{name}", json.dumps(info), ex=60)
        pipe.set("tq:w-not-a-worker", "x")
        pipe.set("big", b"\x00\r\n" * 100_000)  # a value larger than any socket read, with CRLF inside
        pipe.execute()
    ids = [uuid.uuid4() for _ in range(300)]
    LiveMessages(full).add((i, None) for i in ids[:200])
    LiveMessages(full).sent(ids[:150])
    full.hset("tq:m:started", mapping={"hot": time.time()})
    with _light(url) as light:
        assert sorted(light.scan_iter(match="tq:w:*", count=100)) == sorted(full.scan_iter(match="tq:w:*"))
        assert light.mget(["big", "missing", "tq:w-not-a-worker"]) == full.mget(["big", "missing", "tq:w-not-a-worker"])
        assert light.mget([]) == []
        assert Presence(light).workers() == Presence(full).workers() and len(Presence(light).workers()) == 1500  # type: ignore[arg-type]
        assert Presence(light).consumers() == Presence(full).consumers()  # type: ignore[arg-type]
        assert LiveMessages(light).live(ids) == LiveMessages(full).live(ids) == set(ids[:200])  # type: ignore[arg-type]
        queued = [(i, "hot" if n % 2 else "cold") for n, i in enumerate(ids)]
        assert LiveMessages(light).overdue(queued, 0.0) == LiveMessages(full).overdue(queued, 0.0)  # type: ignore[arg-type]
        with light.pipeline() as pipe, full.pipeline(transaction=False) as same:
            assert pipe.zmscore("tq:m:live", [str(ids[0]), "nope"]).hmget("tq:m:started", ["hot", "x"]).execute() == \
                same.zmscore("tq:m:live", [str(ids[0]), "nope"]).hmget("tq:m:started", ["hot", "x"]).execute()
        assert light.ping()


def test_it_reads_the_database_the_url_names(spare: tuple[str, redis.Redis], redis_dbs: RedisDbs) -> None:
    url, full = spare
    full.set("only-here", "1")
    with _light(url) as here, _light(redis_dbs.url(3)) as elsewhere:
        assert here.mget(["only-here"]) == [b"1"] and elsewhere.mget(["only-here"]) == [None]
    path_db = int(url.rsplit("/", 1)[1])
    with _light(f"{url.rsplit('/', 1)[0]}/?db={path_db}") as by_query:
        assert by_query.mget(["only-here"]) == [b"1"]


def test_errors_say_what_failed_and_never_the_password(spare: tuple[str, redis.Redis]) -> None:
    url, _ = spare
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RespError, match=f"cannot connect to Redis at 127.0.0.1:{port}: ") as down:
        _light(f"redis://:s3cret@127.0.0.1:{port}/0").ping()
    host = url.split("://", 1)[1]
    with pytest.raises(RespError, match="Redis refused a command: .*AUTH") as refused:
        _light(f"redis://:s3cret@{host}").ping()  # this Redis has no password
    assert "s3cret" not in str(down.value) + str(refused.value) + repr(_light(f"redis://:s3cret@{host}"))
    with pytest.raises(RespError, match="unknown command|ERR"), _light(url) as light:
        light.execute("NO-SUCH-COMMAND")


def test_urls_it_does_not_handle_go_to_redis_py() -> None:
    assert client_for("rediss://example:6380/0") is None  # TLS
    assert client_for("redis://127.0.0.1:6379/0?socket_timeout=1") is None  # an option it would ignore
    assert client_for("redis+sentinel://127.0.0.1:26379/0") is None
    light = client_for("unix:///run/redis.sock?db=2")
    assert light is not None and light.address == "/run/redis.sock" and light.db == 2
    light = client_for("redis://user:pw@h:7000/5")
    assert light is not None and light.address == ("h", 7000) and light.db == 5


def test_a_dropped_connection_is_opened_again_and_odd_replies_are_errors(spare: tuple[str, redis.Redis]) -> None:
    url, full = spare
    with _light(url) as light:
        light.ping()
        full.client_kill_filter(_id=str(light.execute("CLIENT", "ID")))  # as a Redis restart or a proxy would
        assert light.ping() and light.mget(["nothing"]) == [None]
        with pytest.raises(RespError, match="Redis refused a command: (ERR )?boom"):  # an error inside an array
            light.execute("EVAL", "return {1, redis.error_reply('boom')}", 0)
    with socket.socket() as server:  # something that is not Redis on the port
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"$abc\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with pytest.raises(RespError, match="sent a reply this client cannot read"):
            _light(f"redis://127.0.0.1:{port}/0").ping()
        thread.join(5)


def test_the_eviction_policy_of_a_redis_whose_user_may_not_run_info_is_unknown_not_an_error(tmp_path: Path) -> None:
    # An ACL of +@all -@dangerous (least privilege) refuses INFO. Found by a review: the check added that day
    # made every worker exit "cannot reach Redis" and every `tierq status` fail on such a user.
    from reliability.fault_services import evicting_redis

    from tierq.presence import eviction_policy

    with evicting_redis(tmp_path / "redis") as url:
        admin = redis.Redis.from_url(url)
        admin.acl_setuser("tq", enabled=True, passwords=["+s3cret"], keys=["*"], channels=["*"],
                          commands=["+@all", "-@dangerous"])
        limited = url.replace("redis://", "redis://tq:s3cret@")
        full, py, resp = admin, redis.Redis.from_url(limited), client_for(limited)
        assert resp is not None
        try:
            assert eviction_policy(full) == "allkeys-lru"  # the admin sees it
            assert py.ping() and resp.ping()  # the limited user reaches Redis...
            assert eviction_policy(py) is None and eviction_policy(resp) is None  # ...and cannot see the policy
        finally:
            for client in (full, py, resp):
                client.close()


def test_notes_of_workers_that_did_not_start_are_dropped_once_older_than_their_time(
        spare: tuple[str, redis.Redis]) -> None:
    # Found by a review: each refusal kept the whole hash another hour, so notes under names never used
    # again (a rollout's hostnames) stayed as long as some worker refused within each hour.
    from tierq.presence import STARTUP_TTL_S

    _, client = spare
    presence = Presence(client)
    old = json.dumps({"reason": "gone long ago", "at": time.time() - STARTUP_TTL_S - 60})
    client.hset(presence.unstarted_key, "hot|w-old@host", old)
    presence.did_not_start("w-new@host", ["hot"], "no key")
    assert set(client.hkeys(presence.unstarted_key)) == {b"hot|w-new@host"}
    assert set(presence.not_started()) == {"hot"}
