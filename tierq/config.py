"""The TOML configuration: providers, models with prices, tiers in escalation order, routing rules.

Prices are parsed as `Decimal` straight from the TOML text, so a price is never a float anywhere.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tierq.cache_config import CacheConfig
from tierq.errors import ConfigError
from tierq.money import PRICE_PLACES, Price
from tierq.outline import Outline, read_toml
from tierq.quality import QualityConfig
from tierq.router.config import RouterConfig
from tierq.sections import AnswerConfig, CompressionConfig, RoutingConfig, WorkerConfig
from tierq.validator_config import ValidatorConfig, import_callable, resolve_validators

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$"
QUEUE_NAME = r"^[a-z][a-z0-9_-]*$"
RESERVED_QUEUES = {"classify"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    """An OpenAI-compatible endpoint; its key is read from the environment variable it names."""

    base_url: str
    base_url_env: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)


class ModelConfig(_Strict):
    """A model with its list prices (USD per million tokens) and context window."""

    provider: str
    model: str | None = Field(default=None, description="name sent to the API; defaults to the table key")
    input_usd_per_mtok: Decimal = Field(ge=0)
    output_usd_per_mtok: Decimal = Field(ge=0)
    cached_input_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    context_window: int = Field(gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0, description="requests per minute, shared by all workers")
    tpm: int | None = Field(default=None, gt=0, description="tokens per minute, shared by all workers")
    logprobs: bool = Field(default=False, description="ask for token log-probabilities (the router reads them)")
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        default="json_schema", description="the response_format a --json-schema batch asks this model for")
    # Provider batch prices (a tier in mode "batch"): given, or the list prices times batch_discount.
    batch_input_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    batch_output_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    batch_discount: Decimal = Field(default=Decimal("0.5"), gt=0, le=1, description="batch price / list price")

    @field_validator("input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok",
                     "batch_input_usd_per_mtok", "batch_output_usd_per_mtok")
    @classmethod
    def _exact_price(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value != value.quantize(Decimal(1).scaleb(-PRICE_PLACES)):
            raise ValueError(f"{value} has more than {PRICE_PLACES} decimal places")
        return value

    @property
    def price(self) -> Price:
        """The model's prices; cached input defaults to the input price."""
        cached = self.cached_input_usd_per_mtok
        return Price(
            self.input_usd_per_mtok, self.output_usd_per_mtok, cached if cached is not None else self.input_usd_per_mtok
        )

    @property
    def batch_price(self) -> Price:
        """The model's prices through a provider's batch API: the batch prices given, else the list prices
        times `batch_discount` (Decimal arithmetic, exact)."""
        listed, off = self.price, self.batch_discount
        given_in, given_out = self.batch_input_usd_per_mtok, self.batch_output_usd_per_mtok
        return Price(given_in if given_in is not None else listed.input * off,
                     given_out if given_out is not None else listed.output * off,
                     given_in if given_in is not None else listed.cached_input * off)


class TierConfig(_Strict):
    """One tier: its queue has the tier's name; the first model is used, the next ones on provider errors."""

    name: str = Field(pattern=QUEUE_NAME)
    models: tuple[str, ...]
    timeout_s: float | None = Field(default=None, gt=0, description="per-call timeout; default the provider's")
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_base_s: float = Field(default=0.5, gt=0, description="first backoff; doubles per retry, with jitter")
    retry_max_s: float = Field(default=30.0, gt=0, description="cap of one backoff or Retry-After wait")
    max_tokens: int | None = Field(default=None, gt=0)
    # "batch": the tier's jobs go to the provider's batch API (half price, answers within batch_window) unless
    # their batch was submitted with a shorter --deadline; "deadline": only when their batch's --deadline is at
    # least batch_window; "interactive": never.
    mode: Literal["interactive", "batch", "deadline"] = "interactive"
    batch_window: str = Field(default="24h", pattern=r"^[0-9]+h$", description="the provider's completion window")
    batch_poll_s: float = Field(default=30.0, gt=0, description="how often an open provider batch is looked at")
    batch_max_requests: int = Field(default=1000, ge=1, le=50_000, description="requests per provider file (and "
                                    "jobs per message of this tier)")
    batch_max_bytes: int = Field(default=100_000_000, ge=10_000, le=200_000_000,
                                 description="bytes of request lines per provider file (OpenAI takes up to 200 MB)")
    batch_max_wait_s: float = Field(default=60.0, ge=0, description="how long a provider file waits for more of "
                                    "its batch's jobs before it is sent unfilled")
    batch_fallback: Literal["interactive", "next"] = Field(
        default="interactive", description="where a provider batch's unfinished requests go when it expires, "
        "fails or is cancelled: this tier's models called directly, or the next tier")

    @property
    def window_s(self) -> float:
        """The provider's completion window in seconds."""
        return float(self.batch_window[:-1]) * 3600

    def uses_batch_api(self, deadline_s: float | None) -> bool:
        """Whether jobs with this much time left until their batch's deadline (None: it has none) go to the
        provider's batch API: when the window, in whole hours, fits in the time left rounded up to the hour
        (so a batch submitted with `--deadline 24h` uses a 24 h window during its first hour)."""
        if self.mode == "interactive":
            return False
        if deadline_s is None:
            return self.mode == "batch"
        return self.window_s <= math.ceil(deadline_s / 3600) * 3600


# Key of a batch's params holding tierq's own batch options (--compress, --json-schema, --deadline); never
# sent, since only tierq.params.PASSED_PARAMS reach a model.
RESERVED_PARAMS = "_tierq"
DEADLINE_KEY = "deadline_at"  # under RESERVED_PARAMS: when the batch must be done (`--deadline`), Unix time


def batch_deadline(params: Mapping[str, Any]) -> float | None:
    """Seconds left until the deadline of a job's batch (`tierq submit --deadline`), or None without one: a
    job that escalates late in its batch's life may no longer have a provider's window to wait."""
    options = params.get(RESERVED_PARAMS)
    value = options.get(DEADLINE_KEY) if isinstance(options, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return float(value) - time.time()


class Config(_Strict):
    """The whole TOML file, validated and cross-checked."""

    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    tiers: tuple[TierConfig, ...]
    routing: RoutingConfig = RoutingConfig()
    answers: AnswerConfig = AnswerConfig()
    worker: WorkerConfig = WorkerConfig()
    cache: CacheConfig = CacheConfig()
    validators: dict[str, ValidatorConfig] = Field(default_factory=dict)
    compression: CompressionConfig = CompressionConfig()
    quality: QualityConfig = QualityConfig()
    router: RouterConfig = RouterConfig()
    simulator: dict[str, Any] | None = None
    source: str = "<memory>"

    def tier(self, name: str) -> TierConfig:
        """The tier called `name`."""
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise ConfigError(f"{self.source}: no tier named {name!r}; tiers are {self.tier_names}")

    @property
    def tier_names(self) -> list[str]:
        """Tier names in escalation order."""
        return [tier.name for tier in self.tiers]

    def tier_index(self, name: str) -> int:
        """Position of the tier in escalation order (0 is the cheapest)."""
        return self.tier_names.index(self.tier(name).name)

    @property
    def tier_chunks(self) -> dict[str, int]:
        """Jobs per tier message of a batch without a deadline (`tier_chunks_for`)."""
        return self.tier_chunks_for(None)

    def tier_chunks_for(self, deadline_s: float | None) -> dict[str, int]:
        """Jobs per tier message for a batch with this deadline: `batch_max_requests` at a tier whose jobs go
        to the provider's batch API, else `[worker] tier_chunk`."""
        return {t.name: t.batch_max_requests if t.uses_batch_api(deadline_s) else self.worker.tier_chunk
                for t in self.tiers}

    def next_tier(self, name: str) -> str | None:
        """The tier a failed job escalates to, or None after the last."""
        index = self.tier_index(name)
        return self.tiers[index + 1].name if index + 1 < len(self.tiers) else None

    @property
    def digest(self) -> str:
        """A short fingerprint of what this configuration does (not where it was read from): workers and
        producers of one deployment must agree on it."""
        raw = self.model_dump_json(exclude={"source"})
        return hashlib.sha256(raw.encode()).hexdigest()[:12]

    def price(self, model: str) -> Price:
        """Prices of a configured model."""
        return self.models[model].price

    @property
    def verifier_model(self) -> str:
        """The model of gray-zone verification (`[cache] verify_model`, else the tiers' cheapest)."""
        used = [name for tier in self.tiers for name in tier.models]
        return self.cache.verify_model or min(used, key=lambda n: self.price(n).input + self.price(n).output)

    @property
    def router_tiers(self) -> tuple[str, str]:
        """(cheap, strong): the tier whose answers a learned router judges, and where it sends the rest."""
        return (self.router.cheap_tier or self.tiers[0].name, self.router.strong_tier or self.reference_tier)

    @property
    def reference_tier(self) -> str:
        """The tier audits ask: `[quality] reference_tier`, else the top tier."""
        return self.quality.reference_tier or self.tiers[-1].name

    @property
    def outline(self) -> Outline:
        """What reading a batch needs of this configuration (tierq.outline)."""
        return Outline(self.tier_names, self.reference_tier, self.worker.stuck_after_s)

    @property
    def max_context(self) -> int:
        """The largest context window of any model used by a tier."""
        return max(self.models[m].context_window for tier in self.tiers for m in tier.models)


def load_config(path: Path | str, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and check the TOML file at `path`; `env` (when given) must hold every provider's key variable."""
    path = Path(path)
    return parse_config(read_toml(path), source=str(path), env=env)


def parse_config(raw: Mapping[str, Any], *, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed TOML mapping; errors name `source`, the entry and the fix."""
    try:
        config = Config.model_validate({**raw, "source": source})
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt table ([[tier]]) is reported once, as unknown with its likely name, not also as a missing one.
        unknown = {str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1}
        errors = [e for e in errors if not (e["type"] == "missing" and len(e["loc"]) == 1
                                             and did_you_mean(str(e["loc"][0]), unknown))]
        raise ConfigError("\n".join(_describe(source, err) for err in errors)) from None
    _cross_check(config, source)
    config = _resolve_validators(config, source)
    _import_comparators(config, source)
    if env is not None:
        _check_keys(config, source, env)
    return config


def did_you_mean(name: str, known: Iterable[str], otherwise: str = "") -> str:
    """`; did you mean 'x'?` for the closest of `known` to a misspelt `name`, else `otherwise`."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else otherwise


def not_a_tier(name: str, names: Sequence[str]) -> str:
    """What follows "'x' is not a tier": the tier it probably meant, or the tiers to choose from."""
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    tiers = ", ".join(repr(n) for n in names)
    return f"; did you mean {close[0]!r} (the tiers are {tiers})?" if close else f"; use one of {tiers}"


def _table(name: str, value: Any) -> str:
    """A top-level TOML key as the file writes it: [[name]] for a list of tables, [name] for a table."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return f"[[{name}]]"
    return f"[{name}]" if isinstance(value, dict) else name


def _describe(source: str, err: Any) -> str:
    where = ".".join(str(part) for part in err["loc"])
    top = len(err["loc"]) == 1
    if err["type"] == "missing" and top:
        name = str(err["loc"][0])
        if name == "tiers":
            return f"{source}: no [[tiers]]; add at least one tier with a list of models"
        return f"{source}: no [{name}] table; add it"
    if err["type"] == "missing":
        return f"{source}: [{where.rsplit('.', 1)[0]}] is missing {err['loc'][-1]!r}; add it"
    if err["type"] == "extra_forbidden" and top and isinstance(err.get("input"), (dict, list)):
        written = _table(where, err["input"])
        tables = [name for name in Config.model_fields if name != "source"]  # source: the file's path, not a table
        close = difflib.get_close_matches(where, tables, n=1, cutoff=0.6)
        fix = (f"did you mean {written.replace(where, close[0])}?" if close else "remove it or check its spelling")
        return f"{source}: unknown table {written}; {fix}"
    if err["type"] == "extra_forbidden":
        owner = _model_at(err["loc"][:-1])
        fix = "; remove it or check its spelling"
        return f"{source}: {where}: unknown setting" + (
            did_you_mean(str(err["loc"][-1]), owner.model_fields, fix) if owner is not None else fix)
    return f"{source}: {where}: {err['msg']}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The settings table a location in the TOML points into (for spelling hints), when known."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            continue  # a key of a dict of tables (a model's or provider's name), or an index into a list
        inner = [a for a in getattr(field.annotation, "__args__", (field.annotation,)) if isinstance(a, type)]
        nested = next((a for a in inner if issubclass(a, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


def _cross_check(config: Config, source: str) -> None:
    problems: list[str] = []
    if not config.tiers:
        problems.append(f"{source}: no [[tiers]]; add at least one tier with a list of models")
    seen: set[str] = set()
    for tier in config.tiers:
        if tier.name in seen or tier.name in RESERVED_QUEUES:
            problems.append(f"{source}: tier name {tier.name!r} is used twice or reserved; rename it")
        seen.add(tier.name)
        if not tier.models:
            problems.append(f"{source}: tier {tier.name!r} has no models; list at least one in models = [...]")
        for model in tier.models:
            if model not in config.models:
                problems.append(f"{source}: tier {tier.name!r} uses unknown model {model!r}"
                                + did_you_mean(model, config.models, f"; add [models.\"{model}\"]"))
    for name, model_cfg in config.models.items():
        if model_cfg.provider not in config.providers:
            problems.append(f"{source}: model {name!r} uses unknown provider {model_cfg.provider!r}"
                            + did_you_mean(model_cfg.provider, config.providers,
                                           f"; add [providers.{model_cfg.provider}]"))
    order = config.tier_names
    names = set(order)
    if config.routing.default_tier is not None and config.routing.default_tier not in names:
        problems.append(f"{source}: routing.default_tier {config.routing.default_tier!r} is not a tier"
                        f"{not_a_tier(config.routing.default_tier, order)}")
    for rule in config.routing.rules:
        if rule.tier not in names:
            problems.append(f"{source}: routing rule {rule.name!r} names unknown tier {rule.tier!r}"
                            f"{not_a_tier(rule.tier, order)}")
    provider = config.cache.embedding_provider
    if config.cache.embedder == "openai" and provider not in config.providers:
        problems.append(f"{source}: cache.embedding_provider {provider!r} is not a provider"
                        f"{did_you_mean(provider or '', config.providers)}; name one of {sorted(config.providers)}")
    verifier = config.cache.verify_model
    if verifier is not None and verifier not in config.models:
        problems.append(f"{source}: cache.verify_model {verifier!r} is not a model"
                        f"{did_you_mean(verifier, config.models)}; name one of {sorted(config.models)}")
    floor, threshold = config.cache.verify_from, config.cache.threshold
    if floor is not None and threshold is not None and floor >= threshold:
        problems.append(f"{source}: cache.verify_from {floor} must be under cache.threshold {threshold}")
    for task, check in config.validators.items():
        problems.extend(f"{source}: validators.{task}.tiers names unknown tier {name!r}{not_a_tier(name, order)}"
                        for name in check.tiers if name not in names)
    reference = config.quality.reference_tier
    if reference is not None and reference not in names:
        problems.append(
            f"{source}: quality.reference_tier {reference!r} is not a tier{not_a_tier(reference, order)}"
        )
    for key in ("cheap_tier", "strong_tier"):
        tier = getattr(config.router, key)
        if tier is not None and tier not in names:
            problems.append(f"{source}: router.{key} {tier!r} is not a tier{not_a_tier(tier, order)}")
    if not problems and (config.router.cheap_tier or config.router.strong_tier):
        cheap, strong = config.router_tiers
        if order.index(strong) <= order.index(cheap):
            problems.append(f"{source}: router.strong_tier {strong!r} must come after router.cheap_tier {cheap!r} "
                            f"in the tier order {order}")
    if problems:
        raise ConfigError("\n".join(problems))


def _resolve_validators(config: Config, source: str) -> Config:
    """Read schema files, check schemas and import callables, so a bad validator stops start-up."""
    resolved = resolve_validators(config.validators, source)
    return config.model_copy(update={"validators": resolved}) if resolved else config


def _import_comparators(config: Config, source: str) -> None:
    """Import the quality comparators' callables, so a bad one stops start-up as a bad validator does
    (found only at the first audit, it cost every audit its reference call and left no label)."""
    quality = config.quality
    tables = [("quality.comparator", quality.comparator)] + [
        (f"quality.task_types.{task}.comparator", override.comparator)
        for task, override in quality.task_types.items() if override.comparator is not None]
    for where, comparator in tables:
        if comparator.callable is not None:
            import_callable(comparator.callable, f"{source}: {where}")


def _check_keys(config: Config, source: str, env: Mapping[str, str]) -> None:
    check_keys(config, env.get, {config.models[m].provider for tier in config.tiers for m in tier.models})


def check_keys(config: Config, lookup: Callable[[str], str | None], providers: set[str]) -> None:
    """Raise ConfigError naming the first of `providers` whose API key variable `lookup` finds unset."""
    for name in sorted(providers):
        var = config.providers[name].api_key_env
        if var and not lookup(var):
            raise ConfigError(
                f"{config.source}: provider {name!r} reads its API key from ${var}, which is not set; "
                f"export {var}=<your key> before starting"
            )


def providers_for(config: Config, queues: Iterable[str]) -> set[str]:
    """The providers a worker consuming `queues` calls: each tier's models, and for the classify queue
    the summary model (compression) and the embedding provider."""
    used: set[str] = set()
    for queue in queues:
        if queue == "classify":
            used.add(config.models[config.tiers[0].models[0]].provider)
            if config.cache.embedder == "openai" and config.cache.embedding_provider:
                used.add(config.cache.embedding_provider)
            if config.cache.verify:
                used.add(config.models[config.verifier_model].provider)
        elif queue in config.tier_names:
            used.update(config.models[m].provider for m in config.tier(queue).models)
    return used
