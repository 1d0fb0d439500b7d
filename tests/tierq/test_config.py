"""The TOML configuration: a valid file loads exactly; each mistake names the file, the entry and the fix."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tierq.config import load_config, providers_for
from tierq.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[providers.default]
base_url = "https://api.example.com/v1"
api_key_env = "TIERQ_TEST_KEY"

[models."qwen3-8b"]
provider = "default"
input_usd_per_mtok = 0.01
output_usd_per_mtok = 0.02
cached_input_usd_per_mtok = 0.005
context_window = 32768

[models."big"]
provider = "default"
input_usd_per_mtok = 2.5
output_usd_per_mtok = 10
context_window = 128000

[[tiers]]
name = "hot"
models = ["qwen3-8b"]

[[tiers]]
name = "cold"
models = ["big"]
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tierq.toml"
    path.write_text(body)
    return path


def test_shipped_configs_load() -> None:
    for name in ("example.toml", "sim.toml"):
        config = load_config(ROOT / "tierq" / "configs" / name)
        assert config.tier_names == ["hot", "warm", "cold"]


def test_prices_are_exact_decimals(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.price("qwen3-8b").cached_input == Decimal("0.005")
    assert config.price("big").cached_input == Decimal("2.5")  # defaults to the input price
    assert config.next_tier("hot") == "cold" and config.next_tier("cold") is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s: s.replace('models = ["big"]', 'models = ["gpt-9"]'),
            "tier 'cold' uses unknown model 'gpt-9'; add [models.\"gpt-9\"]",
        ),
        (
            lambda s: s.replace("output_usd_per_mtok = 10\n", ""),
            "[models.big] is missing 'output_usd_per_mtok'; add it",
        ),
        (lambda s: s.replace('models = ["big"]', "models = []"), "tier 'cold' has no models; list at least one"),
        (
            lambda s: s.replace(
                'provider = "default"\ninput_usd_per_mtok = 2.5', 'provider = "nope"\ninput_usd_per_mtok = 2.5'
            ),
            "model 'big' uses unknown provider 'nope'; add [providers.nope]",
        ),
        (
            lambda s: s.replace("input_usd_per_mtok = 0.01", "input_usd_per_mtok = 0.0000001"),
            "more than 6 decimal places",
        ),
        (lambda s: s + '\n[routing]\ndefault_tier = "lukewarm"\n', "routing.default_tier 'lukewarm' is not a tier"),
        (
            lambda s: s.replace("context_window = 32768", "context_window = 32768\ncolour = 1"),
            "models.qwen3-8b.colour: unknown setting",
        ),
        (lambda s: s.replace('name = "cold"', 'name = "hot"'), "tier name 'hot' is used twice"),
        (
            lambda s: s.replace('models = ["big"]', 'models = ["bgi"]'),
            "tier 'cold' uses unknown model 'bgi'; did you mean 'big'?",
        ),
        (
            lambda s: s.replace("context_window = 32768", "context_window = 32768\ncontext_windw = 1"),
            "models.qwen3-8b.context_windw: unknown setting; did you mean 'context_window'?",
        ),
        (lambda s: s + "\n[worker]\nlease = 5\n", "worker.lease: unknown setting; did you mean 'lease_s'?"),
    ],
)
def test_config_errors_name_file_entry_and_fix(tmp_path: Path, change: object, expected: str) -> None:
    path = write(tmp_path, change(GOOD))  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.replace("[[tiers]]", "[[tier]]"), "unknown table [[tier]]; did you mean [[tiers]]?"),
        (lambda s: s.replace("[providers.default]", "[provider.default]"),
         "unknown table [provider]; did you mean [providers]?"),
        (lambda s: s.replace("[[tiers]]", "[[levels]]"),
         "no [[tiers]]; add at least one tier with a list of models\n"
         "{path}: unknown table [[levels]]; remove it or check its spelling"),
        (lambda s: s + '\n[routing]\ndefault_tier = "hott"\n',
         "routing.default_tier 'hott' is not a tier; did you mean 'hot' (the tiers are 'hot', 'cold')?"),
        (lambda s: s + '\n[quality]\nreference_tier = "platinum"\n',
         "quality.reference_tier 'platinum' is not a tier; use one of 'hot', 'cold'"),
    ],
)
def test_a_misspelt_table_or_tier_is_named_once_with_what_was_meant(tmp_path: Path, change: object,
                                                                       expected: str) -> None:
    path = write(tmp_path, change(GOOD))  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: " + expected.format(path=path)


def test_missing_api_key_variable_stops_start_up(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"reads its API key from \$TIERQ_TEST_KEY, which is not set; export"):
        load_config(path, env={})
    assert load_config(path, env={"TIERQ_TEST_KEY": "sk-x"}).tier_names == ["hot", "cold"]


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found; set TIERQ_CONFIG"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[providers"))


def test_a_router_must_route_up_the_tier_order(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(
        (ROOT / "tierq" / "configs" / "sim.toml").read_text() + '\n[router]\ncheap_tier = "cold"\nstrong_tier = "hot"\n'
    )
    with pytest.raises(ConfigError, match=r"router.strong_tier 'hot' must come after router.cheap_tier 'cold'"):
        load_config(path)


def test_a_deadline_mode_tier_uses_the_batch_api_only_for_a_batch_with_a_long_enough_deadline(
        tmp_path: Path) -> None:
    body = GOOD.replace('models = ["big"]', 'models = ["big"]\nmode = "deadline"\nbatch_window = "12h"')
    cold = load_config(write(tmp_path, body)).tier("cold")
    assert [cold.uses_batch_api(d) for d in (None, 3600, 12 * 3600, 86400)] == [False, False, True, True]
    # the time left is rounded up to the hour: a batch due in 12 h still uses it a minute later, not an hour later
    assert (cold.uses_batch_api(12 * 3600 - 60), cold.uses_batch_api(11 * 3600)) == (True, False)
    with pytest.raises(ConfigError, match="mode"):
        load_config(write(tmp_path, body.replace('"deadline"', '"sometimes"')))


def test_batch_mode_tiers_and_batch_prices(tmp_path: Path) -> None:
    body = GOOD.replace('models = ["big"]', 'models = ["big"]\nmode = "batch"\nbatch_max_requests = 500')
    body = body.replace("context_window = 32768", "context_window = 32768\nbatch_input_usd_per_mtok = 0.004")
    config = load_config(write(tmp_path, body))
    assert config.tier("cold").mode == "batch" and config.tier("hot").mode == "interactive"
    assert config.tier_chunks == {"hot": 50, "cold": 500}
    cold = config.tier("cold")  # mode "batch": always, unless a batch's deadline is shorter than the window
    assert (cold.window_s, cold.uses_batch_api(None), cold.uses_batch_api(86400), cold.uses_batch_api(3600)) == (
        86400, True, True, False)
    assert config.tier_chunks_for(3600) == {"hot": 50, "cold": 50}
    assert not config.tier("hot").uses_batch_api(10 * 86400)
    big = config.models["big"].batch_price  # half the list prices, exactly
    assert (big.input, big.output, big.cached_input) == (Decimal("1.25"), Decimal("5.0"), Decimal("1.25"))
    small = config.models["qwen3-8b"].batch_price  # a given batch input price; output at the discount
    assert (small.input, small.output, small.cached_input) == (Decimal("0.004"), Decimal("0.01"), Decimal("0.004"))
    with pytest.raises(ConfigError, match="mode"):
        load_config(write(tmp_path, GOOD.replace('models = ["big"]', 'models = ["big"]\nmode = "bulk"')))


def test_a_classify_worker_that_verifies_cache_hits_needs_the_verifiers_provider(tmp_path: Path) -> None:
    other = ('\n[providers.other]\nbase_url = "https://other.example.com/v1"\napi_key_env = "TIERQ_OTHER_KEY"\n'
             '\n[models."judge-mini"]\nprovider = "other"\ninput_usd_per_mtok = 0.05\noutput_usd_per_mtok = 0.1\n'
             'context_window = 8192\n')
    config = load_config(write(tmp_path, GOOD + other), env={"TIERQ_TEST_KEY": "k", "TIERQ_OTHER_KEY": "k"})
    assert providers_for(config, ["classify"]) == {"default"} and config.verifier_model == "qwen3-8b"
    verifying = write(tmp_path, GOOD + other + '\n[cache]\nverify = true\nverify_model = "judge-mini"\n')
    config = load_config(verifying, env={"TIERQ_TEST_KEY": "k", "TIERQ_OTHER_KEY": "k"})
    assert providers_for(config, ["classify"]) == {"default", "other"} and config.verifier_model == "judge-mini"
