"""In-process tests of the simulator's config validation and decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakellm import SimConfig
from fakellm.batch_config import BatchTiming, Progress
from fakellm.behaviour import Outcome, decide, forced_outcome, request_key


def test_missing_table_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tierq.toml"
    path.write_text('[providers.x]\nbase_url = "http://example.invalid"\n')
    config = SimConfig.from_toml(path)
    assert config == SimConfig()
    assert config.behaviour("anything").answer_words == (8, 40)


def test_project_model_names_are_advertised(tmp_path: Path) -> None:
    path = tmp_path / "tierq.toml"
    path.write_text(
        '[models.a]\nprovider = "sim"\n[models.b]\nprovider = "sim"\n'
        "[simulator.models.b]\nlatency_ms = 5\n[simulator.models.c]\n"
    )
    config = SimConfig.from_toml(path)
    assert config.model_names() == ["b", "c", "a"]
    assert config.behaviour("a") == config.defaults


def test_top_level_values_are_defaults_for_every_model() -> None:
    config = SimConfig.from_mapping(
        {"seed": 3, "latency_ms": 5, "models": {"hot": {"latency_ms": 20}, "plain": {}}}
    )
    assert config.seed == 3
    assert config.behaviour("hot").latency_ms == 20
    assert config.behaviour("plain").latency_ms == 5
    assert config.behaviour("unknown").latency_ms == 5
    assert list(config.models) == ["hot", "plain"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"models": {"sim-hot": {"latncy_ms": 1}}}, ["latncy_ms", "sim-hot"]),
        ({"colour": "red"}, ["colour"]),
        ({"models": {"m": {"refusal_rate": 1.5}}}, ["refusal_rate", "m"]),
        ({"models": {"m": {"empty_rate": -0.1}}}, ["empty_rate"]),
        ({"refusal_rate": 0.6, "models": {"m": {"empty_rate": 0.6}}}, ["m", "more than 1"]),
        ({"models": {"m": {"answer_words": [5, 2]}}}, ["answer_words"]),
        ({"models": {"m": {"latency_ms": "fast"}}}, ["latency_ms"]),
        ({"seed": "x"}, ["seed"]),
        ({"models": {"m": 3}}, ["m"]),
    ],
)
def test_invalid_config_is_rejected_with_a_clear_message(
    data: dict[str, object], words: list[str]
) -> None:
    with pytest.raises(ValueError) as caught:
        SimConfig.from_mapping(data)
    for word in words:
        assert word in str(caught.value)


def test_markers_force_outcomes_and_respect_targets() -> None:
    assert forced_outcome(["plain text"], "m") is None
    assert forced_outcome(["x [[sim:empty]]"], "m") is Outcome.EMPTY
    assert forced_outcome(["[[sim:hang@other]]"], "m") is None
    assert forced_outcome(["[[sim:hang@m]]"], "m") is Outcome.HANG
    assert forced_outcome(["[[sim:truncate]]", "[[sim:429]]"], "m") is Outcome.ERROR_429


def test_decisions_are_deterministic_and_depend_on_occurrence() -> None:
    config = SimConfig.from_mapping({"refusal_rate": 0.5})
    key = request_key("m", '[{"content":"hi","role":"user"}]')
    first = [decide(config, "m", key, n, None).outcome for n in range(64)]
    again = [decide(config, "m", key, n, None).outcome for n in range(64)]
    assert first == again
    assert set(first) == {Outcome.OK, Outcome.REFUSAL}
    reseeded = SimConfig.from_mapping({"seed": 1, "refusal_rate": 0.5})
    assert [decide(reseeded, "m", key, n, None).outcome for n in range(64)] != first


def test_latency_includes_deterministic_jitter() -> None:
    config = SimConfig.from_mapping({"latency_ms": 10, "latency_jitter_ms": 5})
    key = request_key("m", "[]")
    latencies = [decide(config, "m", key, n, None).latency_s for n in range(50)]
    assert all(0.010 <= value <= 0.015 for value in latencies)
    assert len(set(latencies)) > 1


def test_batch_timings_come_from_the_batch_table_and_metadata() -> None:
    config = SimConfig.from_mapping({"latency_ms": 5, "batch": {"in_progress_s": 2, "progress": "at_end"}})
    assert config.batch == BatchTiming(in_progress_s=2.0, progress=Progress.AT_END)
    assert config.defaults.latency_ms == 5
    timing = config.batch.for_metadata({"sim_window_s": "0.5", "sim_progress": "gradual", "owner": "ops"})
    assert (timing.window_s, timing.progress, timing.in_progress_s) == (0.5, Progress.GRADUAL, 2.0)
    assert SimConfig().batch == BatchTiming()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"batch": {"colour": 1}}, ["colour", "simulator.batch", "window_s"]),
        ({"batch": {"progress": "sometimes"}}, ["progress", "'gradual'", "'at_end'"]),
        ({"batch": {"window_s": -1}}, ["window_s", ">= 0"]),
        ({"batch": {"finalizing_s": "soon"}}, ["finalizing_s"]),
        ({"batch": 3}, ["simulator.batch"]),
        ({"batch_api_error_500_rate": 1.5}, ["batch_api_error_500_rate", "[0, 1]", "1.5"]),
        ({"batch_api_error_500_rate": "often"}, ["batch_api_error_500_rate", "'often'"]),
        ({"batch_stray_lines": ["garbled"]}, ["batch_stray_lines", "'malformed'", "'garbled'"]),
        ({"batch_stray_lines": "malformed"}, ["batch_stray_lines", "a list"]),
        ({"batch_stray_lines": ["malformed", "malformed"]}, ["batch_stray_lines", "at most once"]),
    ],
)
def test_invalid_batch_table_is_rejected_with_a_clear_message(data: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        SimConfig.from_mapping(data)
    for word in words:
        assert word in str(caught.value)


def test_invalid_batch_metadata_names_the_key() -> None:
    with pytest.raises(ValueError, match="metadata.sim_window_s must be a number of seconds, got 'later'"):
        BatchTiming().for_metadata({"sim_window_s": "later"})
    with pytest.raises(ValueError, match="metadata.sim_speed is not a simulator setting"):
        BatchTiming().for_metadata({"sim_speed": "1"})
