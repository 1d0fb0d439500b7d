"""Turn tierq's own errors, and outages of the services it needs, into one clear line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from tierq.errors import ConfigError, InputError, NotFound, TierqError, Unavailable

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn tierq's own errors into one clear line on stderr and a non-zero exit."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            from tierq.settings import apply_log_level, get_settings

            apply_log_level(get_settings().log_level)
            return func(*args, **kwargs)
        except (ConfigError, InputError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except Unavailable as exc:  # a service this command needs (producer.outages says which and what to do)
            from producer.outages import describe
            from tierq.settings import get_settings

            click.echo(f"error: {describe(exc, get_settings()) or exc}", err=True)
            sys.exit(2)
        except (NotFound, TierqError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            # Imported here: `tierq --help` must not pay for SQLAlchemy, redis and kombu.
            from producer.outages import describe
            from tierq.settings import get_settings

            line = describe(exc, get_settings())
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
