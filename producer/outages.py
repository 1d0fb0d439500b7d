"""One line for a service a command cannot reach (Postgres, Redis, the broker): what failed, where
(the URL without its password) and what to do, instead of a traceback."""

from __future__ import annotations

import psycopg
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import AuthenticationError, OutOfMemoryError, RedisError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from models.pq import PqConnectError, PqError
from tierq.broker import refusal
from tierq.redact import lone_user, masked_url, scrubbed, shown_broker_url, shown_redis_url
from tierq.resp import RespError
from tierq.settings import Settings

CONNECTIONS = "docs/deployment.md#postgres-connections"
FULL = "used memory > 'maxmemory'"  # what a Redis at maxmemory says when `noeviction` refuses a write
FULL_FIX = ("raise its maxmemory (redis-cli CONFIG SET maxmemory ...; keep maxmemory-policy noeviction, "
            "docs/deployment.md), or free memory: tierq cache clear")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("(Background", "[SQL")):
            # libpq: 'connection failed: connection to server at "h", port p failed: FATAL:  <reason>'
            return line.rsplit("FATAL:", 1)[-1].strip()
    return type(exc).__name__


def describe(exc: BaseException, settings: Settings) -> str | None:
    """The line to print for an outage of a service, or None when `exc` is not one."""
    # psycopg's and libpq's own errors: the commands that only read a batch connect without SQLAlchemy
    # (models.db.connect).
    # SQLAlchemy's (submit, cancel, retry, recover, report) wrap psycopg's, which carry the same SQLSTATE.
    sqlstate = exc.sqlstate if isinstance(exc, PqError) else getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(exc, (PqError, DBAPIError)) and sqlstate in ("42P01", "42703"):  # no such table, or column
        shown, problem = masked_url(settings.database_url), scrubbed(_first_line(exc), settings.database_url)
        return f"Postgres at {shown} does not hold tierq's current tables ({problem}); run: tierq db upgrade"
    if isinstance(exc, (OperationalError, PoolTimeout, psycopg.OperationalError, PqConnectError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        shown = masked_url(settings.database_url)
        problem = scrubbed(_first_line(exc), settings.database_url)
        if "too many" in problem.lower() or isinstance(exc, PoolTimeout):
            return (f"Postgres at {shown} refuses new connections ({problem}); workers hold concurrency + 8 each: "
                    f"lower their -c, run fewer, or raise max_connections ({CONNECTIONS})")
        if "does not exist" in problem and "database" in problem:
            return f"Postgres at {shown}: {problem}; create it with: tierq db upgrade"
        if "password" in problem or "authentication" in problem or "role" in problem:
            return f"Postgres at {shown} refused the login ({problem}); fix the user or password in TIERQ_DATABASE_URL"
        return f"cannot reach Postgres at {shown} ({problem}); start it or fix TIERQ_DATABASE_URL"
    if isinstance(exc, (RedisError, RespError)):
        shown, problem = shown_redis_url(settings.redis_url), _first_line(exc)
        # "start it" is no help to a server that is up and wants a password, or another one.
        asks = "NOAUTH" in problem or "HELLO must be called with the client already authenticated" in problem
        if (asks or isinstance(exc, AuthenticationError) or "WRONGPASS" in problem) and lone_user(settings.redis_url):
            return (f"Redis at {shown} {'asks for a password' if asks else f'refused the login ({problem})'}, and "
                    "TIERQ_REDIS_URL gives a user name without a password; a password goes after a colon: "
                    "redis://:PASSWORD@HOST:PORT/DB")
        if asks:
            return (f"Redis at {shown} asks for a password and TIERQ_REDIS_URL gives none; put it there: "
                    "redis://:PASSWORD@HOST:PORT/DB")
        if isinstance(exc, AuthenticationError) or "WRONGPASS" in problem:
            return f"Redis at {shown} refused the login ({problem}); fix the user or password in TIERQ_REDIS_URL"
        if isinstance(exc, OutOfMemoryError) or FULL in problem:  # "start it" is no help either: it is up
            return f"Redis at {shown} is full and refuses writes ({problem.rstrip('.')}); {FULL_FIX}"
        return f"cannot use Redis at {shown} ({problem}); start it or fix TIERQ_REDIS_URL"
    refused = refusal(exc)
    if refused is not None:
        return f"the broker at {shown_broker_url(settings.broker)} {refused[0]}; {refused[1]}"
    if isinstance(exc, BrokerError) and FULL in str(exc):
        return (f"the broker at {shown_broker_url(settings.broker)} is full and refuses new messages "
                f"({_first_line(exc).rstrip('.')}); {FULL_FIX}")
    if isinstance(exc, BrokerError):
        return (f"cannot reach the broker at {shown_broker_url(settings.broker)} ({_first_line(exc)}); "
                "start it or fix TIERQ_BROKER_URL")
    return None
