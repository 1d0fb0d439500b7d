"""URLs as tierq shows them: without the secrets they may carry, in the user part (`user:PASSWORD@`) or in
the query (`?password=...`, `?sslpassword=...`, `?token=...`: libpq, redis-py and kombu all take a password
there too).

Every URL tierq prints (an error, `tierq doctor`, `tierq demo`) goes through `masked_url`, and a driver's
message that may quote its URL back through `scrubbed`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
# A query parameter whose name holds one of these carries a secret, or names one (sslkey, passfile): its
# value is not shown. Hiding a harmless one costs a line a detail; showing a secret cannot be taken back.
SECRET_NAMES = ("pass", "secret", "token", "key", "credential", "auth")
# name=value in a query: after ?, & or ; up to the next & or ; or the fragment.
_PARAMETER = re.compile(r"([?&;])([^=&;#?]+)=([^&;#]*)")
# From the user's colon to the last @ (a password may hold a / or an @), after the scheme if there is one
# (without the lookahead, a URL with a user and no password read as the scheme's colon up to its @).
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
_USERINFO = re.compile(rf"^((?:{_SCHEME}|(?!{_SCHEME}))[^/@:]*:).*@")


def _secret_name(name: str) -> bool:
    lowered = unquote(name).lower()
    return any(part in lowered for part in SECRET_NAMES)


def masked_url(url: str) -> str:
    """`url` with the user's password and the value of every query parameter named like a secret (password,
    sslpassword, token, api_key, ...) replaced by ***; the rest (host, port, database, sslmode) as given."""
    # The query first: a value holding an @ would otherwise be taken for the end of the user part.
    url = _PARAMETER.sub(lambda m: f"{m[1]}{m[2]}={MASK}" if _secret_name(m[2]) else m[0], url)
    return _USERINFO.sub(rf"\1{MASK}@", url)


def secrets_of(url: str) -> set[str]:
    """The secrets `url` holds, as written and percent-decoded: its user's password and the values of its
    query parameters named like a secret."""
    found = {m[3] for m in _PARAMETER.finditer(url) if _secret_name(m[2]) and m[3]}
    rest = _PARAMETER.sub("", url)
    user = _USERINFO.match(rest)
    if user and user.end() - 1 > user.end(1):
        found.add(rest[user.end(1) : user.end() - 1])
    return found | {unquote(secret) for secret in found}


def scrubbed(message: str, url: str) -> str:
    """`message` (a driver's error about `url`) with every secret of `url` in it replaced by ***."""
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        message = message.replace(secret, MASK)
    return message


# A user part with no password in a Redis URL (`redis://S3cret@host`): the colon before the password
# forgotten, the common slip. Redis reads it as a user name, and it is most likely the password.
# Up to the last @ before the host (a password may hold an @), not into a query or fragment; any case of the
# scheme, sockets too.
_LONE_USER = re.compile(r"^((?:redis|rediss|sentinel|unix|redis\+socket)://)([^/:?#]+)@", re.IGNORECASE)


def lone_user(url: str) -> bool:
    """Whether a Redis URL (or one of a sentinel list's) gives a user part and no password."""
    return any(_LONE_USER.match(masked_url(part.strip())) for part in url.split(";"))


def shown_redis_url(url: str) -> str:
    """A Redis URL as tierq prints it: the password masked, and a user part with no password masked whole
    (in each URL of a `;`-separated sentinel list)."""
    return ";".join(_LONE_USER.sub(rf"\1{MASK}@", masked_url(part)) for part in url.split(";"))


def shown_broker_url(url: str) -> str:
    """A broker URL as tierq prints it: a Redis one as `shown_redis_url` does, any other as kombu does."""
    if _LONE_USER.match(url) or url.lower().startswith(("redis", "sentinel", "unix")):
        return shown_redis_url(url)
    from kombu.utils.url import maybe_sanitize_url

    return ";".join(str(maybe_sanitize_url(part)) for part in url.split(";"))  # a failover list: each URL
