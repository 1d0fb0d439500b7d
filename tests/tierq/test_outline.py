"""The outline of the TOML that `tierq status` and `results` read: the values of the full check, without it,
unless one of them looks wrong."""

from __future__ import annotations

import socket
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


def test_a_file_that_cannot_be_read_is_named_with_the_reason(tmp_path: Path) -> None:
    # A socket opens for nobody, root included: the same branch as a file without read permission.
    path = tmp_path / "tierq.toml"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(ConfigError) as info:
            read_outline(path)
    assert str(info.value) == (f"{path}: cannot read it (No such device or address); make it readable by this user, "
                               "or set TIERQ_CONFIG to a TOML file it can read")


def test_the_first_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tierq.toml"
    path.write_bytes("# prix en \u20ac\n[worker]\nthreads = 4 # caf".encode() + b"\xe9\n")
    with pytest.raises(ConfigError, match=r"tierq.toml:3: not UTF-8 text; save it as UTF-8"):
        read_outline(path)
