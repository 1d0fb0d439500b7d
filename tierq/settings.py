"""The one settings object: every `TIERQ_` environment variable is read here and nowhere else."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tierq.config import Config, ProviderConfig, load_config
from tierq.errors import ConfigError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PACKAGES = ("tierq", "models", "workers", "producer", "fakellm")


def apply_log_level(level: str) -> None:
    """Log tierq's own messages at `level` and above (TIERQ_LOG_LEVEL), to standard error unless the
    process (a Celery worker) already has a handler."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level)


class Settings(BaseSettings):
    """Process-wide settings from `TIERQ_*` environment variables (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_prefix="TIERQ_", env_file=".env", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = Field(default=None, description="Celery broker; defaults to redis_url")
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/tierq"
    config: Path = Path("tierq.toml")
    log_level: str = "INFO"
    visibility_timeout_s: float | None = Field(
        default=None, gt=0, description="Redis broker redelivery delay; default: twice the longest task"
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LEVELS:
            raise ValueError(f"{value!r} is not a log level; use one of {', '.join(LEVELS)}")
        return level

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{value!r} is not a Redis URL; use redis://HOST:PORT/DB")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError(f"{value!r} is not a PostgreSQL URL; use postgresql+psycopg://USER@HOST:PORT/DB")
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        return value

    @property
    def broker(self) -> str:
        """The Celery broker URL: TIERQ_BROKER_URL, or the Redis URL when it is unset."""
        return self.broker_url or self.redis_url

    def env(self, name: str) -> str | None:
        """A variable the TOML names (a provider's key or URL); the one other read of the environment."""
        return os.environ.get(name) or None

    def api_key(self, env_var: str) -> SecretStr | None:
        """The API key held in `env_var` (named by the TOML), never logged or stored."""
        value = self.env(env_var)
        return SecretStr(value) if value else None

    def load_config(self, *, require_keys: bool = False) -> Config:
        """The TOML file named by TIERQ_CONFIG; with `require_keys`, every provider's key must be set."""
        return load_config(self.config, env=os.environ if require_keys else None)

    def provider_url(self, provider: ProviderConfig) -> str:
        """A provider's base URL: the variable named by `base_url_env` when set, else `base_url`."""
        if provider.base_url_env:
            return self.env(provider.base_url_env) or provider.base_url
        return provider.base_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once; a bad value stops start-up with its variable named."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TIERQ_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
