"""The libpq reader (models.pq) that `tierq status` and `results` use: the same rows, as the same Python
values, as psycopg gives for the same query on the same database; parameters sent apart from the SQL; a
server-side cursor that streams; and one clear error for a refused connection, a bad login and a query the
server rejects."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from models import pq
from models.db import connect, libpq_url
from models.query import rows, stream
from producer.outages import describe
from tierq.settings import Settings

SQL = """
    SELECT :n AS n, :big AS big, CAST(:price AS numeric) AS price, :s AS s, CAST(:id AS uuid) AS id,
           CAST(:flag AS boolean) AS flag, CAST(:when AS timestamptz) AS when_, DATE '2026-11-30' AS day,
           CAST(:ratio AS double precision) AS ratio, json_build_object('a', 1, 'b', ARRAY[1, 2]) AS doc,
           CAST('{"k": "v"}' AS jsonb) AS docb, ARRAY[3, NULL, 5]::bigint[] AS ints,
           ARRAY['a b', 'q"uote', 'back\\slash', 'NULL', NULL]::text[] AS texts,
           ARRAY[CAST(:id AS uuid)] AS ids, CAST(NULL AS text) AS nothing, CAST(:ids AS uuid[]) AS sent,
           CAST(:names AS text[]) AS names, 'xx'::name AS other, '10:00'::time AS clock
"""
PARAMS: dict[str, Any] = {
    "n": 7, "big": 2**62, "price": Decimal("0.000123456789"), "s": "héllo 'quoted' %s :x", "id": uuid.uuid4(),
    "flag": True, "when": datetime(2026, 11, 30, 8, 55, 1, 123456, tzinfo=UTC), "ratio": 0.25,
    "ids": [uuid.UUID(int=1), uuid.UUID(int=2)], "names": ["a,b", 'c"d', None],
}


def test_values_come_back_as_psycopg_gives_them(database_url: str) -> None:
    with connect(database_url) as ours:
        assert isinstance(ours, pq.Connection)
        got = rows(ours, SQL, PARAMS)
    with psycopg.connect(libpq_url(database_url)) as theirs:
        expected = rows(theirs, SQL, PARAMS)
    assert got == expected
    row = got[0]
    assert row[:4] == (7, 2**62, Decimal("0.000123456789"), "héllo 'quoted' %s :x")
    assert row[11:13] == ([3, None, 5], ["a b", 'q"uote', "back\\slash", "NULL", None])
    assert (row[7], row[15], row[16]) == (date(2026, 11, 30), PARAMS["ids"], ["a,b", 'c"d', None])
    assert row[6] == PARAMS["when"]


def test_a_parameter_is_never_part_of_the_sql(database_url: str) -> None:
    hostile = "x'); DROP TABLE nowhere; --"
    with connect(database_url) as conn:
        assert rows(conn, "SELECT :v, :v || '!'", {"v": hostile}) == [(hostile, hostile + "!")]
        with pytest.raises(KeyError, match=":missing"):
            rows(conn, "SELECT :missing", {})


def test_a_cursor_streams_in_pieces_and_the_connection_is_usable_after(database_url: str) -> None:
    with connect(database_url) as conn:
        streamed = list(stream(conn, "SELECT g FROM generate_series(1, :n) AS g ORDER BY g", {"n": 2500},
                               "tierq_test_cursor", size=1000))
        assert streamed == [(g,) for g in range(1, 2501)]
        assert rows(conn, "SELECT 1") == [(1,)]
        # A consumer that stops early leaves no transaction open.
        first = stream(conn, "SELECT g FROM generate_series(1, 10) AS g", {}, "tierq_test_cursor", size=3)
        assert next(first) == (1,)
        first.close()
        assert rows(conn, "SELECT 2") == [(2,)]


def test_a_query_the_server_rejects_is_one_error_with_its_sqlstate(database_url: str) -> None:
    with connect(database_url) as conn:
        with pytest.raises(pq.PqError) as caught:
            rows(conn, "SELECT * FROM no_such_table_here")
        assert caught.value.sqlstate == "42P01"
        assert 'relation "no_such_table_here" does not exist' in str(caught.value)
        assert rows(conn, "SELECT 3") == [(3,)]
    settings = Settings(database_url=database_url)
    line = describe(caught.value, settings)
    assert line is not None and line.endswith("run: tierq db upgrade")


def test_a_refused_connection_and_a_bad_login_are_one_line_without_the_password(database_url: str) -> None:
    refused = "postgresql+psycopg://tierq:s3cret-pw@127.0.0.1:9/tierq"
    with pytest.raises(pq.PqConnectError) as caught:
        connect(refused)
    line = describe(caught.value, Settings(database_url=refused))
    assert line is not None and line.startswith("cannot reach Postgres at postgresql+psycopg://tierq:***@127.0.0.1:9")
    assert "s3cret-pw" not in line and "\n" not in line

    host = database_url.split("@", 1)[1]
    nobody = f"postgresql+psycopg://no_such_role_tierq:s3cret-pw@{host}"
    with pytest.raises(pq.PqConnectError) as caught:
        connect(nobody)
    line = describe(caught.value, Settings(database_url=nobody))
    assert line is not None and "refused the login" in line and "s3cret-pw" not in line


def test_without_libpq_a_connection_is_psycopgs(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pq, "_library_paths", lambda: ["/nonexistent/libpq.so.5"])
    pq.load.cache_clear()
    try:
        with connect(database_url) as conn:
            assert isinstance(conn, psycopg.Connection)
            assert rows(conn, "SELECT :n + 1", {"n": 1}) == [(2,)]
            assert list(stream(conn, "SELECT generate_series(1, 3)", {}, "tierq_test_cursor", size=2)) == [
                (1,), (2,), (3,)]
    finally:
        pq.load.cache_clear()


def test_parameters_are_found_where_sqlalchemy_finds_them() -> None:
    from sqlalchemy import text

    for sql in ("SELECT :a, :b_2 FROM t WHERE x = :a", "SELECT :ab::int", "SELECT x::text, CAST(:c AS int)",
                "SELECT '10:30', :d", "SELECT \\:e, :f"):
        _, found = pq._numbered(sql)
        assert set(found) == set(text(sql).compile().params), sql


def test_integers_go_as_the_smallest_type_that_holds_them(database_url: str) -> None:
    with connect(database_url) as conn:
        # repeat() and make_interval(days => ...) take int4: a bigint parameter would find no function.
        assert rows(conn, "SELECT repeat('ab', :n), make_interval(days => :n) = interval '3 days'", {"n": 3}) == [
            ("ababab", True)]
        assert rows(conn, "SELECT :big + 1, :huge", {"big": 2**40, "huge": 10**30}) == [(2**40 + 1, 10**30)]


def test_arrays_it_cannot_read_as_a_list_come_back_as_their_text(database_url: str) -> None:
    with connect(database_url) as conn:
        assert rows(conn, "SELECT ARRAY[[1, 2], [3, 4]], '[0:1]={5,6}'::int[], ARRAY[DATE '2026-11-30']") == [
            ("{{1,2},{3,4}}", "[0:1]={5,6}", [date(2026, 11, 30)])]


def test_dates_are_read_whatever_datestyle_the_session_starts_with(database_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGDATESTYLE", "SQL, DMY")  # libpq sends it at start-up, as a role's setting would be
    with connect(database_url) as conn:
        assert rows(conn, "SELECT TIMESTAMPTZ '2026-11-30 08:55:01+00', DATE '2026-11-30'") == [
            (datetime(2026, 11, 30, 8, 55, 1, tzinfo=UTC), date(2026, 11, 30))]


def test_a_password_libpq_quotes_back_is_not_in_the_error() -> None:
    with pytest.raises(pq.PqConnectError) as caught:
        connect("postgresql+psycopg://tierq:s3cr%zzet@127.0.0.1:9/tierq")
    assert "s3cr" not in str(caught.value) and "***" in str(caught.value)
