"""What reading a batch needs of the TOML file: the tiers in order, the reference tier and `stuck_after_s`.

`tierq status` and `tierq results` need no more, and building the whole validated `Config` (pydantic and
a dozen models) takes longer than their queries. `read_outline` reads just these values, and when one of
them looks wrong it hands the file to the full check (`tierq.config.load_config`), so a mistake there reads
as it always has. A mistake elsewhere in the file does not stop a command that only reads a batch; the
commands and workers that use the rest check all of it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from tierq.errors import ConfigError

STUCK_AFTER_S = 120.0  # [worker] stuck_after_s when the file does not set it


@dataclass(frozen=True, slots=True)
class Outline:
    """The tier order, the tier audits ask (`[quality] reference_tier`, else the top tier) and how long a
    job may stay unchanged before it counts as stuck."""

    tier_names: list[str]
    reference_tier: str
    stuck_after_s: float = STUCK_AFTER_S

    def tier_index(self, name: str) -> int:
        """Position of a tier in escalation order (0 is the cheapest)."""
        return self.tier_names.index(name)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file at `path`, numbers with a fraction as Decimal (so a price is never a float)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found; set TIERQ_CONFIG to your TOML file "
            "(configs/example.toml is a documented example)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a TOML file; set TIERQ_CONFIG to the TOML file itself") from None
    except OSError as exc:  # no permission, an I/O error
        why = exc.strerror or type(exc).__name__
        raise ConfigError(f"{path}: cannot read it ({why}); make it readable by this user, or set "
                          "TIERQ_CONFIG to a TOML file it can read") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text; save it as UTF-8 (a TOML file is UTF-8 by definition)") from None
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def read_outline(path: Path | str) -> Outline:
    """The outline of the TOML file at `path`, validating the whole file only when the outline's values
    look wrong (then its errors are the full check's)."""
    path = Path(path)
    outline = _outline(read_toml(path))
    if outline is not None:
        return outline
    from tierq.config import load_config

    return load_config(path).outline


def _outline(raw: dict[str, Any]) -> Outline | None:
    """The outline when every value it takes is well formed, else None."""
    tiers = raw.get("tiers")
    if not isinstance(tiers, list) or not tiers or not all(isinstance(t, dict) for t in tiers):
        return None
    names = [tier.get("name") for tier in tiers]
    if not all(isinstance(name, str) for name in names) or len(set(names)) < len(names):
        return None
    quality, worker = raw.get("quality", {}), raw.get("worker", {})
    if not isinstance(quality, dict) or not isinstance(worker, dict):
        return None
    reference = quality.get("reference_tier", names[-1])
    stuck = worker.get("stuck_after_s", STUCK_AFTER_S)
    if reference not in names or isinstance(stuck, bool) or not isinstance(stuck, (int, float, Decimal)):
        return None
    seconds = float(stuck)
    return Outline(names, reference, seconds) if seconds > 0 else None  # NaN, zero and below: the full check's
