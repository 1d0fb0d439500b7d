"""The outline of the TOML that `tierq status` and `results` read: the values of the full check, without it,
unless one of them looks wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierq.config import load_config
from tierq.errors import ConfigError
from tierq.outline import Outline, read_outline

ROOT = Path(__file__).resolve().parents[2]
SIM = (ROOT / "tierq" / "configs" / "sim.toml").read_text()


def test_the_outline_of_the_shipped_configs_is_the_full_checks() -> None:
    for name in ("example.toml", "sim.toml"):
        path = ROOT / "tierq" / "configs" / name
        assert read_outline(path) == load_config(path).outline == Outline(["hot", "warm", "cold"], "cold", 120.0)


def test_a_mistake_outside_the_outline_does_not_stop_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(SIM + '\n[quality]\nreference_tier = "warm"\n\n[worker]\nstuck_after_s = 30\nlease = 5\n')
    assert read_outline(path) == Outline(["hot", "warm", "cold"], "warm", 30.0)
    with pytest.raises(ConfigError, match="worker.lease: unknown setting; did you mean 'lease_s'?"):
        load_config(path)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[quality]\nreference_tier = "gold"\n', "quality.reference_tier 'gold' is not a tier"),
        ("[worker]\nstuck_after_s = 0\n", "worker.stuck_after_s: Input should be greater than 0"),
        ('[worker]\nstuck_after_s = "2m"\n', "worker.stuck_after_s: Input should be a valid number"),
        ('[[tiers]]\nname = "hot"\nmodels = ["sim-nano"]\n', "tier name 'hot' is used twice or reserved"),
    ],
)
def test_a_wrong_outline_value_gets_the_full_checks_message(tmp_path: Path, extra: str, expected: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(SIM + "\n" + extra)
    with pytest.raises(ConfigError, match=expected):
        read_outline(path)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absent.toml: configuration file not found; set TIERQ_CONFIG"):
        read_outline(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("[tiers")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        read_outline(tmp_path / "bad.toml")
