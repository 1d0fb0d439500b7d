"""The one settings object: every `TIERQ_` environment variable is read here and nowhere else.

A loader of our own, not pydantic-settings: every command reads the settings first, and importing
pydantic-settings (with pydantic and the modules of its cloud sources) took about 0.13 s, a quarter of the
0.5 s in which `tierq status` should be done (docs/benchmarks.md, "Command start-up"). The six fields below
are all there is; each comes from the argument given, else `TIERQ_<FIELD>` in the environment (in any
case), else the `.env` file of the working directory, else its default: the order pydantic-settings used.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierq.errors import ConfigError
from tierq.redact import masked_url

if TYPE_CHECKING:  # pydantic and the TOML models load only for the callers that use them
    from pydantic import SecretStr

    from tierq.config import Config, ProviderConfig

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PACKAGES = ("tierq", "models", "workers", "producer", "fakellm")
# The HTTP client under the OpenAI SDK logs every request at INFO: a line per model call, thousands a minute
# from a busy worker. Its warnings still show; its requests only at DEBUG.
CHATTY = ("httpx2", "httpx")
PREFIX = "TIERQ_"
ENV_FILE = ".env"


def apply_log_level(level: str) -> None:
    """Log tierq's own messages at `level` and above (TIERQ_LOG_LEVEL), to standard error unless the
    process (a Celery worker) already has a handler."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Input should be a valid string")
    return value


def _log_level(value: Any) -> str:
    level = _text(value).strip().upper()
    if level not in LEVELS:
        raise ValueError(f"{value!r} is not a log level; use one of {', '.join(LEVELS)}")
    return level


def _redis_url(value: Any) -> str:
    url = _text(value)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{masked_url(url)!r} is not a Redis URL; use redis://HOST:PORT/DB")
    return url


BROKER_SCHEMES = ("amqp://", "amqps://", "pyamqp://", "redis://", "rediss://", "redis+socket://", "sentinel://",
                  "sqs://")


def _broker_url(value: Any) -> str:
    url = _text(value)
    if not url.startswith(BROKER_SCHEMES):
        raise ValueError(f"{masked_url(url)!r} is not a broker URL; use amqp://USER:PASSWORD@HOST:5672/VHOST "
                         "(RabbitMQ) or redis://HOST:PORT/DB")
    return url


def _postgres_url(value: Any) -> str:
    """The URL in SQLAlchemy's form, `postgresql+psycopg://`, whichever of the usual schemes it was given in."""
    url = _text(value)
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    if not url.startswith("postgresql+psycopg://"):
        raise ValueError(f"{masked_url(url)!r} is not a PostgreSQL URL; use postgresql+psycopg://USER@HOST:PORT/DB")
    return url


def _path(value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError("Input should be a valid path")
    return Path(value)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("Input should be a valid number")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError("Input should be a valid number, unable to parse string as a number") from None
    if not seconds > 0:  # NaN included
        raise ValueError("Input should be greater than 0")
    if math.isinf(seconds):
        raise ValueError("Input should be a finite number")
    return seconds


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else parse(value)


# Each field's default, and how a value given or read is checked (ValueError: what is wrong with it).
DEFAULTS: dict[str, Any] = {
    "redis_url": "redis://127.0.0.1:6379/0",
    "broker_url": None,  # the Celery broker; unset, the Redis URL
    "database_url": "postgresql+psycopg://postgres@127.0.0.1:5432/tierq",
    "config": Path("tierq.toml"),
    "log_level": "INFO",
    "visibility_timeout_s": None,  # the Redis broker's redelivery delay; unset, twice the longest task
}
PARSERS: dict[str, Callable[[Any], Any]] = {
    "redis_url": _redis_url, "broker_url": _optional(_broker_url), "database_url": _postgres_url, "config": _path,
    "log_level": _log_level, "visibility_timeout_s": _optional(_seconds),
}


_WARNED: set[str] = set()


def _near_misses(environ: Mapping[str, str]) -> list[str]:
    """A line for each TIERQ_* variable that is not a setting but nearly spells one (once per process):
    such a typo is otherwise ignored without a word, and the default used."""
    names = [f"{PREFIX}{name.upper()}" for name in DEFAULTS]
    lines = []
    for key in sorted(environ):
        upper = key.upper()
        if upper.startswith(PREFIX) and upper not in names and key not in _WARNED:
            close = difflib.get_close_matches(upper, names, n=1, cutoff=0.88)
            if close:
                _WARNED.add(key)
                lines.append(f"{key} is not a tierq setting and is ignored; did you mean {close[0]}?")
    return lines


def _found(environ: Mapping[str, str]) -> dict[str, str]:
    """The fields set in `environ` or in `.env` (which only fills what `environ` leaves unset), by name."""
    found: dict[str, str] = {}
    if Path(ENV_FILE).is_file():
        from dotenv import dotenv_values  # its parser and ${VAR} expansion, the ones pydantic-settings used

        found.update(_ours(dotenv_values(ENV_FILE, encoding="utf-8")))
    found.update(_ours(environ))
    return found


def _ours(variables: Mapping[str, str | None]) -> dict[str, str]:
    size = len(PREFIX)
    return {key[size:].lower(): value for key, value in variables.items()
            if value is not None and key[:size].upper() == PREFIX and key[size:].lower() in DEFAULTS}


class Settings:
    """Process-wide settings from `TIERQ_*` environment variables (and an optional `.env` file); the
    fields given as arguments take precedence. A bad value raises ConfigError naming every variable wrong."""

    redis_url: str
    broker_url: str | None
    database_url: str
    config: Path
    log_level: str
    visibility_timeout_s: float | None

    def __init__(self, **given: Any) -> None:
        unknown = sorted(set(given) - DEFAULTS.keys())
        if unknown:
            raise TypeError(f"Settings() has no field {', '.join(unknown)}")
        found = {} if len(given) == len(DEFAULTS) else _found(os.environ)
        if len(given) < len(DEFAULTS):  # the environment was read
            for line in _near_misses(os.environ):
                logging.getLogger(__name__).warning(line)
        problems = []
        for name, default in DEFAULTS.items():
            if name not in given and name not in found:
                setattr(self, name, default)
                continue
            try:
                setattr(self, name, PARSERS[name](given[name] if name in given else found[name]))
            except ValueError as exc:
                problems.append(f"{PREFIX}{name.upper()}: {exc}")
        if problems:
            raise ConfigError(f"invalid settings: {'; '.join(problems)}")

    def model_copy(self, *, update: Mapping[str, Any]) -> Settings:
        """These settings with the fields in `update` replaced, checked again (the environment is not read
        again). Named as pydantic's method, which callers used when Settings was a pydantic model."""
        return Settings(**{**self.as_dict(), **update})

    def as_dict(self) -> dict[str, Any]:
        """The fields by name."""
        return {name: getattr(self, name) for name in DEFAULTS}

    def __repr__(self) -> str:
        return f"Settings(redis_url={self.redis_url!r}, config={str(self.config)!r}, log_level={self.log_level!r})"

    @property
    def broker(self) -> str:
        """The Celery broker URL: TIERQ_BROKER_URL, or the Redis URL when it is unset."""
        return self.broker_url or self.redis_url

    def env(self, name: str) -> str | None:
        """A variable the TOML names (a provider's key or URL); the one other read of the environment."""
        return os.environ.get(name) or None

    def api_key(self, env_var: str) -> SecretStr | None:
        """The API key held in `env_var` (named by the TOML), never logged or stored."""
        from pydantic import SecretStr

        value = self.env(env_var)
        return SecretStr(value) if value else None

    def load_config(self, *, require_keys: bool = False) -> Config:
        """The TOML file named by TIERQ_CONFIG; with `require_keys`, every provider's key must be set."""
        from tierq.config import load_config

        return load_config(self.config, env=os.environ if require_keys else None)

    def provider_url(self, provider: ProviderConfig) -> str:
        """A provider's base URL: the variable named by `base_url_env` when set, else `base_url`."""
        if provider.base_url_env:
            return self.env(provider.base_url_env) or provider.base_url
        return provider.base_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once; a bad value stops start-up with its variable named."""
    return Settings()
