"""Replayed and scripted answers: a recorded-answers CSV and `[[sim:say...]]` markers, on a real server."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakellm.answers import count_tokens
from fakellm.cli import main
from fakellm.replay import parse_map, said
from fakellm.testing import SimServer, free_port, running_server

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    {"prompt": "Tom has 3 apples and buys 4 more.  How many apples does he have?",
     "rec-cheap": "True", "rec-strong": "True",
     "rec-cheap_response": "3 + 4 = 7\n#### 7", "rec-strong_response": "Tom has 3 + 4 = 7 apples."},
    {"prompt": "A train goes 60 km in 1 hour. How far in 3 hours?",
     "rec-cheap": "False", "rec-strong": "True",
     "rec-cheap_response": "It goes 60 km", "rec-strong_response": "60 * 3 = 180 km. The answer is 180."},
]
TOML = """
[simulator]
seed = 3

[simulator.replay]
file = "recorded.csv"
models = { "sim-cheap" = "rec-cheap", "sim-strong" = "rec-strong" }
"""


def write_csv(folder: Path) -> Path:
    path = folder / "recorded.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    return path


@pytest.fixture(scope="module")
def replaying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    folder = tmp_path_factory.mktemp("replay")
    write_csv(folder)
    (folder / "sim.toml").write_text(TOML)
    with running_server(folder / "sim.toml", stderr_path=folder / "stderr") as server:
        yield server


def chat(server: SimServer, model: str, *messages: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {"model": model, "messages": [{"role": "user", "content": m} for m in messages], **extra}
    code, _, reply = server.call("POST", "/v1/chat/completions", body)
    return code, reply


def test_mapped_models_answer_with_the_recorded_text_and_its_usage(replaying: SimServer) -> None:
    question = "Tom has 3 apples and buys 4 more. How many apples\ndoes he have? "  # whitespace differs
    code, cheap = chat(replaying, "sim-cheap", question)
    assert code == 200
    assert cheap["choices"][0]["message"]["content"] == ROWS[0]["rec-cheap_response"]
    assert cheap["choices"][0]["finish_reason"] == "stop"
    assert cheap["usage"]["completion_tokens"] == count_tokens(ROWS[0]["rec-cheap_response"])
    assert cheap["usage"]["prompt_tokens"] == 4 + count_tokens(question)
    code, strong = chat(replaying, "sim-strong", "You are a maths tutor.", ROWS[1]["prompt"])
    assert code == 200 and strong["choices"][0]["message"]["content"] == ROWS[1]["rec-strong_response"]


def test_max_tokens_cuts_a_replayed_answer(replaying: SimServer) -> None:
    code, reply = chat(replaying, "sim-strong", ROWS[1]["prompt"], max_tokens=2)
    assert code == 200
    assert reply["choices"][0]["message"]["content"] == ROWS[1]["rec-strong_response"][:8]
    assert reply["choices"][0]["finish_reason"] == "length"


def test_an_unknown_prompt_is_a_clear_400_and_unmapped_models_still_invent(replaying: SimServer) -> None:
    code, reply = chat(replaying, "sim-cheap", "What is the capital of France?")
    assert code == 400
    assert (
        "replay: sim-cheap replays rec-cheap from recorded.csv, which has no recorded answer"
        in reply["error"]["message"]
    )
    code, reply = chat(replaying, "sim-other", "What is the capital of France?")
    assert code == 200 and reply["choices"][0]["message"]["content"]


def test_say_markers_set_the_answer_per_model(replaying: SimServer) -> None:
    prompt = 'Give me JSON [[sim:say@sim-other={"ok": true}]] [[sim:say=plain words]]'
    assert chat(replaying, "sim-other", prompt)[1]["choices"][0]["message"]["content"] == '{"ok": true}'
    assert chat(replaying, "sim-third", prompt)[1]["choices"][0]["message"]["content"] == "plain words"
    refused = chat(replaying, "sim-other", prompt + " [[sim:refuse]]")[1]["choices"][0]
    assert refused["message"]["content"] != '{"ok": true}'


def test_the_command_line_replays_with_a_map(tmp_path: Path) -> None:
    recorded = write_csv(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fakellm", "--port", str(port), "--replay", str(recorded),
         "--replay-map", "sim-a=rec-strong"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server = SimServer(f"http://127.0.0.1:{port}", process)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(server.base_url + "/models", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert (
            chat(server, "sim-a", ROWS[0]["prompt"])[1]["choices"][0]["message"]["content"]
            == ROWS[0]["rec-strong_response"]
        )
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replay", "x.csv"], "--replay FILE and --replay-map SIM=RECORDED,... go together"),
        (["--replay", "{csv}", "--replay-map", "sim-a=rec-none"], "no recorded answers of ['rec-none']"),
        (["--replay", "{csv}", "--replay-map", "sim-a"], "entry 'sim-a' is not SIMULATED=RECORDED"),
        (["--replay", "missing.csv", "--replay-map", "a=b"], "No such file"),
    ],
)
def test_bad_replay_options_stop_start_up(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                          message: str) -> None:
    recorded = str(write_csv(tmp_path))
    assert main(["--port", "0", *[a.replace("{csv}", recorded) for a in args]]) == 2
    assert message in capsys.readouterr().err


def test_parsing_helpers() -> None:
    assert parse_map(" a = b , c=d ") == {"a": "b", "c": "d"}
    assert said(["x [[sim:say@m1=one]] [[sim:say=two]]"], "m1") == "one"
    assert said(["x [[sim:say@m1=one]] [[sim:say=two]]"], "m2") == "two"
    assert said(["nothing here"], "m1") is None
