"""Answer validators end to end: a worker with validators in its TOML, the simulator saying chosen texts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import ROOT, SIM_CONFIG, Stack, start_worker, stop_worker

from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.config import load_config
from tierq.errors import ConfigError, InputError
from workers.calls import params_for

CHECKS_MODULE = '''
def calm(answer, messages):
    """Reject shouting; the question is passed too."""
    return "the answer is all capitals" if answer.isupper() else True


def mentions_order(answer):
    if "order" not in answer.lower():
        raise ValueError("no order is mentioned")
    return True
'''

VALIDATORS = '''
[validators.extract]
kind = "json"
schema = "order.schema.json"

[validators.any_json]
kind = "json"

[validators.ticket]
kind = "regex"
pattern = '^ORDER-\\d+'
flags = "i"

[validators.tone]
kind = "callable"
callable = "tierq_test_checks:calm"

[validators.order]
kind = "callable"
callable = "tierq_test_checks:mentions_order"

[validators.cheap_only]
kind = "regex"
pattern = '#### \\d+'
tiers = ["hot"]
'''

SCHEMA = {"type": "object", "required": ["order"], "properties": {"order": {"type": "integer"}}}


def write_config(folder: Path, extra: str) -> Path:
    """The simulator's TOML plus `extra`, in `folder`, beside the test's schema and checks module."""
    (folder / "order.schema.json").write_text(json.dumps(SCHEMA))
    (folder / "tierq_test_checks.py").write_text(CHECKS_MODULE)
    path = folder / "tierq.toml"
    path.write_text(SIM_CONFIG.read_text() + extra)
    return path


@pytest.fixture(scope="module")
def checked(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A worker on every queue whose TOML has validators, on its own broker database."""
    folder = tmp_path_factory.mktemp("validators")
    config = write_config(folder, VALIDATORS)
    broker = stack.dbs.url(4)
    redis.Redis.from_url(broker).flushdb()
    env = {**stack.env, "TIERQ_CONFIG": str(config), "TIERQ_BROKER_URL": broker,
           "PYTHONPATH": f"{ROOT}:{folder}"}
    worker = start_worker(env, folder / "worker.log", name="validators")
    try:
        yield config, broker
    finally:
        stop_worker(worker)


def run(stack: Stack, checked: tuple[Path, str], records: list[dict[str, Any]],
        options: BatchOptions | None = None) -> dict[str, dict[str, Any]]:
    settings = stack.settings.model_copy(update={"broker_url": checked[1]})
    with Tierq(settings, stack.config) as tq:
        batch = tq.submit(records, options)
        assert batch.rejected == 0, batch.rejections
        stack.wait(tq, batch.batch_id)
        return {r["id"]: r for r in tq.results(batch.batch_id)}


def say(nano: str, mid: str = "", flagship: str = "") -> str:
    """Markers that make each model answer with a given text."""
    markers = [f"[[sim:say@sim-nano={nano}]]"]
    markers += [f"[[sim:say@sim-mid={mid}]]"] if mid else []
    markers += [f"[[sim:say@sim-flagship={flagship}]]"] if flagship else []
    return "Where is my order? " + " ".join(markers)


def path(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["tier"], a["outcome"]) for a in result["attempts"]]


def test_each_validator_kind_escalates_a_bad_answer_as_invalid(clean: Stack, checked: tuple[Path, str]) -> None:
    records = [
        {"id": "json-bad", "task_type": "any_json", "prompt": say("not json at all", '{"order": 17}')},
        {"id": "json-ok", "task_type": "any_json", "prompt": say('{"order": 1}')},
        {"id": "schema-bad", "task_type": "extract", "prompt": say('{"order": "seventeen"}', '{"order": 17}')},
        {"id": "regex-bad", "task_type": "ticket", "prompt": say("no order number here", "order-42 is on its way")},
        {"id": "regex-ok", "task_type": "ticket", "prompt": say("ORDER-7 left the depot")},
        {"id": "callable-bad", "task_type": "tone", "prompt": say("IT IS ON ITS WAY", "It is on its way.")},
        {"id": "callable-raises", "task_type": "order", "prompt": say("It is on its way.", "Your order ships today.")},
        {"id": "unchecked", "prompt": say("not json, and no validator for this task type")},
    ]
    results = run(clean, checked, records)
    assert all(r["status"] == "succeeded" for r in results.values()), results
    for name in ("json-bad", "schema-bad", "regex-bad", "callable-bad", "callable-raises"):
        assert path(results[name]) == [("hot", "invalid"), ("warm", "ok")], name
    for name in ("json-ok", "regex-ok", "unchecked"):
        assert path(results[name]) == [("hot", "ok")], name
    assert results["json-bad"]["content"] == '{"order": 17}'
    errors = _errors(clean)
    assert errors["json-bad"] == "invalid: answer is not valid JSON (Expecting value at line 1 column 1)"
    assert (
        errors["schema-bad"]
        == "invalid: answer does not match the JSON schema at order: 'seventeen' is not of type 'integer'"
    )
    assert errors["regex-bad"] == "invalid: answer does not match the pattern '^ORDER-\\\\d+'"
    assert errors["callable-bad"] == "invalid: the answer is all capitals"
    assert (
        errors["callable-raises"]
        == "invalid: tierq_test_checks:mentions_order raised ValueError: no order is mentioned"
    )


def test_an_answer_invalid_at_every_tier_fails_and_a_validator_can_spare_the_top_tiers(
    clean: Stack, checked: tuple[Path, str]
) -> None:
    results = run(clean, checked, [
        {"id": "doomed", "task_type": "any_json", "prompt": say("no", "still no", "never")},
        {"id": "spared", "task_type": "cheap_only", "prompt": say("I think it is 12", "It is 12.")},
    ])
    doomed = results["doomed"]
    assert doomed["status"] == "failed"
    assert path(doomed) == [("hot", "invalid"), ("warm", "invalid"), ("cold", "invalid")]
    assert doomed["error"].startswith("cold: sim-flagship: invalid: answer is not valid JSON")
    # The warm answer has no "#### n", but this validator checks the hot tier's answers only.
    assert path(results["spared"]) == [("hot", "invalid"), ("warm", "ok")]


def test_invalid_answers_are_never_cached(clean: Stack, checked: tuple[Path, str]) -> None:
    prompt = say("plain words", '{"order": 5}')
    first = run(clean, checked, [{"id": "a", "task_type": "any_json", "prompt": prompt}])
    again = run(clean, checked, [{"id": "b", "task_type": "any_json", "prompt": prompt}])
    assert path(first["a"]) == [("hot", "invalid"), ("warm", "ok")]
    assert again["b"]["cached"] and again["b"]["content"] == '{"order": 5}'
    assert again["b"]["model"] == "sim-mid"


def test_a_batch_json_schema_overrides_the_task_type(clean: Stack, checked: tuple[Path, str]) -> None:
    schema = {"type": "object", "required": ["eta"], "properties": {"eta": {"type": "string"}}}
    results = run(clean, checked, [
        {"id": "plain", "prompt": say('{"order": 3}', '{"eta": "Friday"}')},
        {"id": "ticket", "task_type": "ticket", "prompt": say("ORDER-3", '{"eta": "Monday"}')},
    ], BatchOptions(json_schema=schema, use_cache=False))
    assert path(results["plain"]) == [("hot", "invalid"), ("warm", "ok")]
    assert path(results["ticket"]) == [("hot", "invalid"), ("warm", "ok")]
    assert (
        _errors(clean)["plain"]
        == "invalid: answer does not match the JSON schema at the top level: 'eta' is a required property"
    )


def test_a_json_schema_batch_asks_each_model_for_that_format(clean: Stack, checked: tuple[Path, str]) -> None:
    # No markers: the simulator answers as a provider with structured outputs does, so every answer is
    # valid at the first tier (before, every job failed on every tier: tierq checked the format, never asked).
    schema = {"type": "object", "required": ["intent", "reply"],
              "properties": {"intent": {"enum": ["refund", "delivery"]}, "reply": {"type": "string"}}}
    records = [{"id": f"t{n}", "prompt": f"Ticket {n}: where is my parcel number {n}?"} for n in range(5)]
    results = run(clean, checked, records, BatchOptions(json_schema=schema, use_cache=False, force_tier="hot"))
    assert {path(r)[0] for r in results.values()} == {("hot", "ok")}, results
    assert all(json.loads(r["content"])["intent"] in ("refund", "delivery") for r in results.values())


def test_the_response_format_a_json_schema_batch_sends_follows_the_model() -> None:
    config = load_config(SIM_CONFIG)
    tier, schema = config.tiers[0], {"type": "object"}
    params = {"_tierq": {"json_schema": schema}}
    model = config.models["sim-nano"]
    assert params_for(params, tier, model)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    as_object = model.model_copy(update={"structured_output": "json_object"})
    assert params_for(params, tier, as_object)["response_format"] == {"type": "json_object"}
    assert "response_format" not in params_for(params, tier, model.model_copy(update={"structured_output": "none"}))
    own = {**params, "response_format": {"type": "text"}}  # a job's own choice stays
    assert params_for(own, tier, model)["response_format"] == {"type": "text"}
    assert "response_format" not in params_for({}, tier, model)


def test_a_bad_batch_schema_is_rejected_before_submitting(clean: Stack, checked: tuple[Path, str]) -> None:
    with clean.client() as tq, pytest.raises(InputError, match="--json-schema: the JSON schema is invalid at type"):
        tq.submit([{"prompt": "hi"}], BatchOptions(json_schema={"type": "objekt"}))
    # Set by hand in the batch's params, past that check: its jobs fail with the reason instead of hanging.
    sneaked = BatchOptions(params={"_tierq": {"json_schema": {"type": "objekt"}}}, use_cache=False)
    results = run(clean, checked, [{"id": "x", "prompt": say("{}")}], sneaked)
    assert results["x"]["status"] == "failed"
    assert results["x"]["error"].startswith("cold: sim-flagship: invalid: the batch's --json-schema: the JSON schema")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[validators.t]\nkind = "regex"\npattern = "ORDER-(\\\\d+"\n',
            "validators.t: Value error, pattern 'ORDER-(\\\\d+' is not a valid regular expression",
        ),
        (
            '[validators.t]\nkind = "json"\nschema = { type = "objekt" }\n',
            "validators.t: the JSON schema is invalid at type",
        ),
        ('[validators.t]\nkind = "json"\nschema = "missing.json"\n', "validators.t: cannot read the JSON schema"),
        (
            '[validators.t]\nkind = "callable"\ncallable = "nowhere_at_all:check"\n',
            "validators.t: cannot import 'nowhere_at_all'",
        ),
        (
            '[validators.t]\nkind = "callable"\ncallable = "json:nothing_here"\n',
            "validators.t: 'json' has no function 'nothing_here'",
        ),
        ('[validators.t]\nkind = "regex"\n', 'kind = "regex" needs pattern'),
        (
            '[validators.t]\nkind = "regex"\npattern = "x"\nschema = "a.json"\n',
            'schema does not apply to kind = "regex"',
        ),
        ('[validators.t]\nkind = "json"\ntiers = ["tepid"]\n', "validators.t.tiers names unknown tier 'tepid'"),
    ],
)
def test_a_bad_validator_stops_start_up_with_the_fix(tmp_path: Path, extra: str, expected: str) -> None:
    config = write_config(tmp_path, "\n" + extra)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert expected in str(err.value) and str(config) in str(err.value)


def test_a_worker_with_a_bad_validator_does_not_start(tmp_path: Path, stack: Stack) -> None:
    config = write_config(tmp_path, '\n[validators.t]\nkind = "callable"\ncallable = "nowhere_at_all:check"\n')
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "classify", "--without-gossip"],
        env={**stack.env, "TIERQ_CONFIG": str(config), "TIERQ_BROKER_URL": stack.dbs.url(4)},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "validators.t: cannot import 'nowhere_at_all'" in done.stderr


def _errors(stack: Stack) -> dict[str, str]:
    """The error of each job's first call."""
    from sqlalchemy import text

    with stack.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT DISTINCT ON (j.custom_id) j.custom_id, c.error FROM jobs j JOIN calls c ON c.job_id = j.id "
            "ORDER BY j.custom_id, c.attempt")).all()
    return {custom_id: error for custom_id, error in rows}
