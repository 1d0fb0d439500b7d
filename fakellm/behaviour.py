"""Simulator configuration and the deterministic per-request decisions."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakellm.batch_config import BatchTiming

_RATE_FIELDS = (
    "error_429_rate",
    "error_500_rate",
    "hang_rate",
    "refusal_rate",
    "empty_rate",
    "truncate_rate",
)
_NON_NEGATIVE_FIELDS = ("latency_ms", "latency_jitter_ms", "retry_after_s", "hang_s", "rpm")
_TWO_64 = float(1 << 64)
# Lines a batch's output file may be given that match no request (`batch_stray_lines`; fakellm.batch_stray).
STRAY_KINDS = ("malformed", "no_custom_id", "unknown_custom_id", "duplicate")


class Outcome(enum.Enum):
    """What the simulated provider does with one chat request."""

    ERROR_429 = "429"
    ERROR_500 = "500"
    HANG = "hang"
    REFUSAL = "refusal"
    EMPTY = "empty"
    TRUNCATE = "truncate"
    OK = "ok"


# Fixed order in which cumulative rates (and competing markers) are tried.
_OUTCOME_ORDER = (
    (Outcome.ERROR_429, "error_429_rate"),
    (Outcome.ERROR_500, "error_500_rate"),
    (Outcome.HANG, "hang_rate"),
    (Outcome.REFUSAL, "refusal_rate"),
    (Outcome.EMPTY, "empty_rate"),
    (Outcome.TRUNCATE, "truncate_rate"),
)
_MARKER_NAMES = {
    "429": Outcome.ERROR_429,
    "500": Outcome.ERROR_500,
    "hang": Outcome.HANG,
    "refuse": Outcome.REFUSAL,
    "empty": Outcome.EMPTY,
    "truncate": Outcome.TRUNCATE,
}
_MARKER_RE = re.compile(r"\[\[sim:(refuse|empty|truncate|429|500|hang)(?:@([^\]]+))?\]\]")


@dataclass(frozen=True)
class ModelBehaviour:
    """How one model behaves: latency, failure and quirk rates, answer size."""

    latency_ms: float = 0
    latency_jitter_ms: float = 0
    refusal_rate: float = 0.0
    empty_rate: float = 0.0
    truncate_rate: float = 0.0
    error_429_rate: float = 0.0
    retry_after_s: float = 1
    retry_after_date: bool = False  # send Retry-After as an HTTP date (RFC 9110 allows both forms)
    error_500_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 3600
    cached_fraction: float = 0.0
    answer_words: tuple[int, int] = (8, 40)
    rpm: float = 0  # requests per minute this model accepts (sliding 60 s window); 0 means no limit
    # Share of questions this model answers wrongly: a well-formed answer that differs from the one every
    # model gives otherwise (the same questions every time), so audits have something to find.
    wrong_rate: float = 0.0

    def overridden(self, overrides: Mapping[str, Any], where: str) -> ModelBehaviour:
        """Return a validated copy with the given fields replaced."""
        known = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise ValueError(f"unknown simulator key {key!r} for {where}")
            changes[key] = _check_field(key, value, where)
        result = dataclasses.replace(self, **changes)
        total = sum(getattr(result, name) for name in _RATE_FIELDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"outcome rates for {where} add up to {total:g}, more than 1")
        return result


def _check_field(key: str, value: Any, where: str) -> Any:
    """Validate one behaviour field and return it in its stored form."""
    if key == "answer_words":
        ok = (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and 1 <= value[0] <= value[1]
        )
        if not ok:
            raise ValueError(f"answer_words for {where} must be [min, max] with 1 <= min <= max")
        return (int(value[0]), int(value[1]))
    if key == "retry_after_date":
        if not isinstance(value, bool):
            raise ValueError(f"{key} for {where} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} for {where} must be a number, got {value!r}")
    if key in _RATE_FIELDS or key in ("cached_fraction", "wrong_rate"):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} for {where} must be in [0, 1], got {value!r}")
    elif key in _NON_NEGATIVE_FIELDS and value < 0:
        raise ValueError(f"{key} for {where} must be >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class ReplaySource:
    """A file of recorded answers and which simulated model replays which recorded one (fakellm.replay)."""

    file: str
    models: Mapping[str, str]

    @classmethod
    def from_mapping(cls, data: Any, base: Path | None = None) -> ReplaySource:
        """Validate a `[simulator.replay]` table; a relative `file` is taken from `base`."""
        if not isinstance(data, Mapping) or not isinstance(data.get("file"), str):
            raise ValueError("simulator.replay needs file = \"recorded.csv\" and models = {simulated = \"recorded\"}")
        models = data.get("models")
        if not isinstance(models, Mapping) or not models or not all(isinstance(v, str) for v in models.values()):
            raise ValueError("simulator.replay.models must map simulated model names to recorded model names")
        unknown = sorted(set(data) - {"file", "models"})
        if unknown:
            raise ValueError(f"unknown simulator.replay keys {unknown}; use file and models")
        file = Path(data["file"])
        return cls(str(base / file if base is not None and not file.is_absolute() else file),
                   {str(k): v for k, v in models.items()})


@dataclass(frozen=True)
class SimConfig:
    """The whole simulator behaviour: a seed, defaults, and per-model overrides."""

    seed: int = 0
    defaults: ModelBehaviour = field(default_factory=ModelBehaviour)
    models: Mapping[str, ModelBehaviour] = field(default_factory=dict)
    # Names of the project's `[models]` table: listed by /v1/models, default behaviour.
    extra_model_names: tuple[str, ...] = ()
    # Answer from recorded texts instead of inventing them; read once, when the server starts.
    replay: ReplaySource | None = None
    # How long batches spend in each status (the `[simulator.batch]` table).
    batch: BatchTiming = field(default_factory=BatchTiming)
    # When set, a /v1/ request without `Authorization: Bearer <api_key>` gets HTTP 401, as a provider
    # answers a wrong or revoked key (None: any key, or none, is accepted).
    api_key: str | None = None
    # Share of Batch API requests (create, retrieve, list, cancel, and downloads of a batch's output and error
    # files) answered with HTTP 500, as a provider's batch endpoints fail now and then; the batches run on.
    batch_api_error_500_rate: float = 0.0
    # Lines added to every batch's output file that match none of its requests, one of each kind named:
    # "malformed" (a line cut short, not JSON), "no_custom_id" and "unknown_custom_id" (a billed answer
    # without its custom_id, or under one no request had), as a provider's bug might write them.
    batch_stray_lines: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SimConfig:
        """Build and validate a config from a `[simulator]`-shaped mapping."""
        if not isinstance(data, Mapping):
            raise ValueError("simulator config must be a table/object")
        top = dict(data)
        seed = top.pop("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        raw_replay = top.pop("replay", None)
        replay = None if raw_replay is None else ReplaySource.from_mapping(raw_replay)
        api_key = top.pop("api_key", None)
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ValueError("api_key must be a non-empty string")
        batch_errors = top.pop("batch_api_error_500_rate", 0.0)
        if isinstance(batch_errors, bool) or not isinstance(batch_errors, (int, float)) \
                or not 0.0 <= batch_errors <= 1.0:
            raise ValueError(f"batch_api_error_500_rate must be a number in [0, 1], got {batch_errors!r}")
        stray = _stray_kinds(top.pop("batch_stray_lines", []))
        raw_batch = top.pop("batch", {})
        if not isinstance(raw_batch, Mapping):
            raise ValueError("simulator.batch must be a table/object of batch timings")
        batch = BatchTiming().overridden(raw_batch, "simulator.batch")
        raw_models = top.pop("models", {})
        if not isinstance(raw_models, Mapping):
            raise ValueError("simulator.models must be a table/object of model names")
        defaults = ModelBehaviour().overridden(top, "the [simulator] defaults")
        models: dict[str, ModelBehaviour] = {}
        for name, overrides in raw_models.items():
            if not isinstance(overrides, Mapping):
                raise ValueError(f"simulator.models.{name!r} must be a table/object")
            models[str(name)] = defaults.overridden(overrides, f"model {name!r}")
        return cls(seed=seed, defaults=defaults, models=models, replay=replay, batch=batch, api_key=api_key,
                   batch_api_error_500_rate=float(batch_errors), batch_stray_lines=stray)

    @classmethod
    def from_toml(cls, path: str | Path) -> SimConfig:
        """Read the `[simulator]` table of a TOML file (defaults if it has none).

        Of the rest of the file only the names in its `[models]` table are used.
        """
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
        simulator = document.get("simulator", {})
        config = cls.from_mapping(simulator)
        if isinstance(simulator, Mapping) and simulator.get("replay") is not None:
            base = Path(path).resolve().parent
            config = dataclasses.replace(config, replay=ReplaySource.from_mapping(simulator["replay"], base))
        project_models = document.get("models", {})
        names = tuple(str(n) for n in project_models) if isinstance(project_models, dict) else ()
        return dataclasses.replace(config, extra_model_names=names)

    def model_names(self) -> list[str]:
        """Return every model this simulator advertises, without duplicates."""
        return list(dict.fromkeys([*self.models, *self.extra_model_names]))

    def behaviour(self, model: str) -> ModelBehaviour:
        """Return the behaviour of a model, falling back to the defaults."""
        return self.models.get(model, self.defaults)


def _stray_kinds(value: Any) -> tuple[str, ...]:
    """The validated `batch_stray_lines`: a list of distinct kinds from STRAY_KINDS."""
    if not isinstance(value, list) or not all(isinstance(kind, str) for kind in value):
        raise ValueError(f"batch_stray_lines must be a list of {list(STRAY_KINDS)}, got {value!r}")
    unknown = sorted(set(value) - set(STRAY_KINDS))
    if unknown or len(set(value)) < len(value):
        raise ValueError(f"batch_stray_lines takes each of {list(STRAY_KINDS)} at most once, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Decision:
    """The deterministic choices made for one chat request."""

    outcome: Outcome
    prompt_hash: int
    occurrence: int
    latency_s: float
    answer_hash: int = 0  # what the answer's text is built from: the question's, or this model's wrong one
    wrong: bool = False  # this model answers this question wrongly (wrong_rate)


def request_key(model: str, canonical_messages: str) -> bytes:
    """Return a compact identity for an exact (model, messages) request."""
    data = model.encode() + b"\x00" + canonical_messages.encode()
    return hashlib.blake2b(data, digest_size=16).digest()


def forced_outcome(texts: Iterable[str], model: str) -> Outcome | None:
    """Return the outcome forced by `[[sim:...]]` markers in the texts, if any."""
    found: set[Outcome] = set()
    for text in texts:
        if "[[sim:" not in text:
            continue
        for match in _MARKER_RE.finditer(text):
            target = match.group(2)
            if target is None or target == model:
                found.add(_MARKER_NAMES[match.group(1)])
    for outcome, _ in _OUTCOME_ORDER:
        if outcome in found:
            return outcome
    return None


def decide(
    config: SimConfig, model: str, key: bytes, occurrence: int, forced: Outcome | None, question: bytes = b""
) -> Decision:
    """Decide outcome, latency and hashes for the n-th occurrence of a request; `question` identifies the
    messages whatever the model, so models that answer rightly answer alike."""
    behaviour = config.behaviour(model)
    seed = str(config.seed).encode() + b"\x00"
    prompt_digest = hashlib.blake2b(seed + key, digest_size=8).digest()
    answer_hash = int.from_bytes(hashlib.blake2b(seed + (question or key), digest_size=8).digest(), "little")
    wrong = int.from_bytes(hashlib.blake2b(seed + key + b"\x00wrong", digest_size=8).digest(), "little")
    is_wrong = wrong / _TWO_64 < behaviour.wrong_rate
    if is_wrong:
        answer_hash ^= wrong | 1  # another text, the same one each time this model is asked
    request_digest = hashlib.blake2b(
        seed + key + occurrence.to_bytes(8, "little"), digest_size=16
    ).digest()
    pick = int.from_bytes(request_digest[:8], "little") / _TWO_64
    jitter = int.from_bytes(request_digest[8:], "little") / _TWO_64
    outcome = forced if forced is not None else _outcome_for(behaviour, pick)
    latency_ms = behaviour.latency_ms + behaviour.latency_jitter_ms * jitter
    return Decision(
        outcome=outcome,
        prompt_hash=int.from_bytes(prompt_digest, "little"),
        occurrence=occurrence,
        latency_s=latency_ms / 1000.0,
        answer_hash=answer_hash,
        wrong=is_wrong,
    )


def _outcome_for(behaviour: ModelBehaviour, pick: float) -> Outcome:
    """Map a uniform number in [0, 1) onto the cumulative outcome rates."""
    threshold = 0.0
    for outcome, rate_name in _OUTCOME_ORDER:
        threshold += getattr(behaviour, rate_name)
        if pick < threshold:
            return outcome
    return Outcome.OK
