"""API keys never reach logs (at any level), Postgres, Redis, task arguments, results or errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import redis
from conftest import SIM_CONFIG, Stack, start_worker, stop_worker
from sqlalchemy.engine import make_url

from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.config import load_config

CANARY = "sk-canary-5f3c9e0d41b2a7"


def test_a_canary_key_appears_nowhere(clean: Stack, tmp_path: Path) -> None:
    config_path = tmp_path / "keyed.toml"
    config_path.write_text(SIM_CONFIG.read_text().replace(
        'base_url_env = "TIERQ_SIM_URL"', 'base_url_env = "TIERQ_SIM_URL"\napi_key_env = "TIERQ_CANARY_KEY"'))
    broker = clean.dbs.url(1)
    redis.Redis.from_url(broker).flushdb()
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker, "TIERQ_CONFIG": str(config_path),
           "TIERQ_CANARY_KEY": CANARY, "TIERQ_LOG_LEVEL": "DEBUG"}
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, name="secrets", loglevel="DEBUG")
    try:
        settings = clean.settings.model_copy(update={"broker_url": broker, "redis_url": broker, "config": config_path})
        with Tierq(settings, load_config(config_path)) as tq:
            records = [{"id": "ok", "prompt": "Where is my parcel?"},
                       {"id": "refused", "prompt": "Where is my parcel? [[sim:refuse]]"},
                       {"id": "errors", "prompt": "Where is my parcel? [[sim:500@sim-nano]]"}]
            batch = tq.submit(records, BatchOptions(tenant="secret-test"))
            clean.wait(tq, batch.batch_id)
            results = json.dumps(list(tq.results(batch.batch_id)))
            status = json.dumps(tq.status(batch.batch_id).as_dict())
    finally:
        stop_worker(worker)
    places = {"worker log": log.read_text(errors="replace"), "results": results, "status": status,
              "database dump": _pg_dump(clean.settings.database_url), "redis": _redis_dump(broker)}
    assert "Where is my parcel?" in places["database dump"]  # the dump really holds the batch
    assert "DEBUG" in places["worker log"]  # and the log was written at the most verbose level
    for where, text in places.items():
        assert CANARY not in text, f"the API key leaked into the {where}"
        assert CANARY[6:] not in text, f"part of the API key leaked into the {where}"


def _pg_dump(url: str) -> str:
    parsed = make_url(url)
    out = subprocess.run(
        [
            "pg_dump",
            "-h",
            parsed.host or "127.0.0.1",
            "-p",
            str(parsed.port or 5432),
            "-U",
            parsed.username or "postgres",
            "--data-only",
            parsed.database or "",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def _redis_dump(url: str) -> str:
    client = redis.Redis.from_url(url)
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        parts.append(key.decode(errors="replace"))
        kind = client.type(key)
        if kind == b"string":
            parts.append(repr(client.get(key)))
        elif kind == b"list":
            parts.extend(repr(v) for v in client.lrange(key, 0, -1))
        elif kind == b"hash":
            parts.extend(repr(kv) for kv in client.hgetall(key).items())
        elif kind == b"set":
            parts.extend(repr(v) for v in client.smembers(key))
        elif kind == b"zset":
            parts.extend(repr(v) for v in client.zrange(key, 0, -1))
    return "\n".join(parts)


def test_provider_error_messages_are_scrubbed_of_keys() -> None:
    from workers.llm import scrub

    message = f"Incorrect API key provided: sk-proj-abc1********************xyz9. Also {CANARY} and key_live_123456789."
    cleaned = scrub(message, [CANARY])
    assert CANARY not in cleaned and "sk-proj-abc1" not in cleaned and "key_live_123456789" not in cleaned
    assert cleaned.startswith("Incorrect API key provided: [redacted]")
