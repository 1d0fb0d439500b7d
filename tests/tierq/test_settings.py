"""The settings: each field from the argument, else `TIERQ_<FIELD>`, else `.env`, else its default; every bad
value named in one line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tierq.errors import ConfigError
from tierq.settings import DEFAULTS, Settings


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TIERQ_ variable set, in an empty working directory (so no developer's .env is read)."""
    for name in list(os.environ):
        if name.upper().startswith("TIERQ_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(bare: Path) -> None:
    settings = Settings()
    assert settings.as_dict() == {
        "redis_url": "redis://127.0.0.1:6379/0", "broker_url": None,
        "database_url": "postgresql+psycopg://postgres@127.0.0.1:5432/tierq", "config": Path("tierq.toml"),
        "log_level": "INFO", "visibility_timeout_s": None,
    }
    assert settings.broker == "redis://127.0.0.1:6379/0"


def test_arguments_then_the_environment_then_the_env_file(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (bare / ".env").write_text(
        "# a comment\nexport TIERQ_LOG_LEVEL=warning\nTIERQ_BROKER_URL='amqp://guest@mq:5672//'\n"
        "TIERQ_REDIS_URL=redis://from-the-file:6379/0\nTIERQ_DATABASE_URL=postgresql://app:${PG_PASSWORD}@db/tierq\n"
        "TIERQ_HOT_CONCURRENCY=8\nPOSTGRES_PASSWORD=unrelated\n"
    )
    monkeypatch.setenv("PG_PASSWORD", "s3cret")
    monkeypatch.setenv("tierq_redis_url", "redis://from-the-environment:6379/1")  # any case, as before
    monkeypatch.setenv("TIERQ_VISIBILITY_TIMEOUT_S", "90")
    settings = Settings(config="mine.toml")
    assert settings.as_dict() == {
        "redis_url": "redis://from-the-environment:6379/1", "broker_url": "amqp://guest@mq:5672//",
        "database_url": "postgresql+psycopg://app:s3cret@db/tierq", "config": Path("mine.toml"),
        "log_level": "WARNING", "visibility_timeout_s": 90.0,
    }
    assert Settings(log_level="error").log_level == "ERROR"  # an argument wins over the file


def test_a_copy_is_checked_again_and_does_not_read_the_environment_again(
        bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(redis_url="redis://a:6379/0")
    monkeypatch.setenv("TIERQ_LOG_LEVEL", "DEBUG")
    copy = settings.model_copy(update={"broker_url": "redis://b:6379/0"})
    assert (copy.broker, copy.redis_url, copy.log_level) == ("redis://b:6379/0", "redis://a:6379/0", "INFO")
    with pytest.raises(ConfigError, match="TIERQ_REDIS_URL: 'http://a' is not a Redis URL"):
        settings.model_copy(update={"redis_url": "http://a"})
    with pytest.raises(TypeError, match="no field redis"):
        Settings(redis="redis://a:6379/0")


def test_every_bad_value_is_named_in_one_line(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"TIERQ_REDIS_URL": "http://x", "TIERQ_DATABASE_URL": "mysql://x", "TIERQ_LOG_LEVEL": "loud",
                        "TIERQ_VISIBILITY_TIMEOUT_S": "soon", "TIERQ_BROKER_URL": "amqq://guest:s3cret@mq//"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        Settings()
    assert str(info.value) == (
        "invalid settings: TIERQ_REDIS_URL: 'http://x' is not a Redis URL; use redis://HOST:PORT/DB; "
        "TIERQ_BROKER_URL: 'amqq://guest:***@mq//' is not a broker URL; use amqp://USER:PASSWORD@HOST:5672/VHOST "
        "(RabbitMQ) or redis://HOST:PORT/DB; "
        "TIERQ_DATABASE_URL: 'mysql://x' is not a PostgreSQL URL; use postgresql+psycopg://USER@HOST:PORT/DB; "
        "TIERQ_LOG_LEVEL: 'loud' is not a log level; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL; "
        "TIERQ_VISIBILITY_TIMEOUT_S: Input should be a valid number, unable to parse string as a number"
    )
    for value in ("0", "-1", "nan"):
        with pytest.raises(ConfigError, match="TIERQ_VISIBILITY_TIMEOUT_S: Input should be greater than 0$"):
            Settings(redis_url="redis://a", database_url="postgres://a/b", log_level="info", visibility_timeout_s=value)


def test_a_misspelt_variable_is_named_with_the_setting_it_nearly_spells(
        bare: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TIERQ_DATABSE_URL", "postgresql://elsewhere/db")
    monkeypatch.setenv("TIERQ_SIM_URL", "http://127.0.0.1:1/v1")  # a provider's URL variable: not a near miss
    with caplog.at_level(logging.WARNING, logger="tierq.settings"):
        settings = Settings()
        Settings()  # said once per process
    assert settings.database_url == DEFAULTS["database_url"]
    assert [r.getMessage() for r in caplog.records] == [
        "TIERQ_DATABSE_URL is not a tierq setting and is ignored; did you mean TIERQ_DATABASE_URL?"]


def test_a_bad_url_is_shown_without_its_password(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for value, shown in (("guest:s3cret@rabbit:5672//", "guest:***@rabbit:5672//"),
                         ("amqq://guest:s3/cr@t@rabbit//", "amqq://guest:***@rabbit//")):
        monkeypatch.setenv("TIERQ_BROKER_URL", value)
        with pytest.raises(ConfigError) as info:
            Settings()
        assert f"TIERQ_BROKER_URL: {shown!r} is not a broker URL" in str(info.value) and "s3" not in str(info.value)
