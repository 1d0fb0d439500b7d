"""URLs as tierq shows them: no password, whether in the user part or in the query, and the rest as given."""

from __future__ import annotations

import pytest

from tierq.redact import lone_user, masked_url, scrubbed, secrets_of, shown_broker_url, shown_redis_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://127.0.0.1:5439/x?password=QuerySecret9", "postgresql+psycopg://127.0.0.1:5439/x?password=***"),
        ("postgresql+psycopg://u:pw@h/x?sslmode=require&sslpassword=KeyPass7&connect_timeout=3",
         "postgresql+psycopg://u:***@h/x?sslmode=require&sslpassword=***&connect_timeout=3"),
        ("postgresql+psycopg://h/x?PASS%77ORD=q%40w#f", "postgresql+psycopg://h/x?PASS%77ORD=***#f"),
        ("postgresql+psycopg://h/x?password=at@sign", "postgresql+psycopg://h/x?password=***"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/tierq", "postgresql+psycopg://postgres@127.0.0.1:5432/tierq"),
        ("redis://h:6379/0?password=r3d;db=1", "redis://h:6379/0?password=***;db=1"),
        ("unix:///run/redis.sock?db=2&password=r3d", "unix:///run/redis.sock?db=2&password=***"),
        ("amqp://guest:s3/cr@t@rabbit:5672//?auth_token=t0k&heartbeat=5", "amqp://guest:***@rabbit:5672//?auth_token=***&heartbeat=5"),
        ("sqs://h/?aws_secret_access_key=AKsecret&region=eu", "sqs://h/?aws_secret_access_key=***&region=eu"),
        ("guest:s3cret@rabbit:5672//", "guest:***@rabbit:5672//"),
    ],
)
def test_a_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_the_secrets_are_taken_out_of_a_message_that_quotes_the_url() -> None:
    url = "postgresql://u:p%40ss@h/x?sslpassword=Key%2FPass&password=QuerySecret9"
    assert secrets_of(url) == {"p%40ss", "p@ss", "Key%2FPass", "Key/Pass", "QuerySecret9"}
    message = 'invalid URI "postgresql://u:p%40ss@h/x?sslpassword=Key/Pass&password=QuerySecret9": p@ss'
    assert scrubbed(message, url) == 'invalid URI "postgresql://u:***@h/x?sslpassword=***&password=***": ***'


def test_a_redis_password_given_as_the_user_name_is_masked_whole() -> None:
    # The colon before the password forgotten: Redis reads it as a user name, and it is most likely the password.
    assert shown_redis_url("redis://S3cretPw@cache:6379/0") == "redis://***@cache:6379/0"
    assert lone_user("redis://S3cretPw@cache:6379/0") and lone_user("rediss://x@cache/0")
    assert shown_redis_url("redis://:S3cretPw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert shown_redis_url("redis://cache:6379/0") == "redis://cache:6379/0"
    assert not lone_user("redis://:pw@cache/0") and not lone_user("redis://cache/0")
    assert not lone_user("postgresql://postgres@db/tierq")  # a database user name is no secret
    # A password holding an @, a scheme in capitals, a socket: masked whole all the same.
    assert shown_redis_url("redis://p@ss@cache:6379/0") == "redis://***@cache:6379/0"
    assert shown_redis_url("REDIS://S3cret@cache/0") == "REDIS://***@cache/0"
    assert shown_redis_url("unix://S3cret@/run/redis.sock") == "unix://***@/run/redis.sock"
    assert shown_broker_url("redis://S3cret@cache/0") == "redis://***@cache/0"
    assert shown_broker_url("amqp://guest:pw@mq:5672//") == "amqp://guest:**@mq:5672//"  # kombu's own form
    # Not a query's or a fragment's @; every URL of a sentinel or failover list; a socket.
    assert shown_redis_url("redis://cache?password=p@ss") == "redis://cache?password=***"
    assert not lone_user("redis://cache?password=p@ss")
    assert shown_redis_url("sentinel://S3cret@h1:26379;sentinel://S3cret@h2:26379") == \
        "sentinel://***@h1:26379;sentinel://***@h2:26379"
    assert shown_redis_url("redis+socket://S3cret@/run/redis.sock") == "redis+socket://***@/run/redis.sock"
    assert shown_broker_url("amqp://u:pw@h1//;amqp://u:pw@h2//") == "amqp://u:**@h1//;amqp://u:**@h2//"
