"""de_assets.lib.sql: quoting and the transaction block (no Dagster)."""

from pathlib import Path

import duckdb
import pytest

from de_assets.lib.sql import ident, literal, transaction


def test_literal_doubles_single_quotes_and_takes_paths():
    assert literal("it's") == "'it''s'"
    assert literal("") == "''"
    assert literal(Path("/tmp/o'k/a.parquet")) == "'/tmp/o''k/a.parquet'"
    con = duckdb.connect()
    assert con.execute(f"SELECT {literal(chr(39) * 3 + 'x')}").fetchone()[0] == "'''x"


def test_ident_doubles_double_quotes():
    assert ident('a"b') == '"a""b"'
    con = duckdb.connect()
    name = ident('we"ird col')
    con.execute(f"CREATE TABLE t ({name} INTEGER)")
    assert [r[0] for r in con.execute("DESCRIBE t").fetchall()] == ['we"ird col']


def test_transaction_commits_the_block():
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x INTEGER)")
    with transaction(con):
        con.execute("INSERT INTO t VALUES (1), (2)")
    assert con.execute("SELECT sum(x) FROM t").fetchone()[0] == 3
    with transaction(con):  # the connection is usable for another transaction afterwards
        con.execute("DELETE FROM t WHERE x = 1")
    assert con.execute("SELECT sum(x) FROM t").fetchone()[0] == 2


def test_transaction_rolls_back_and_reraises():
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x INTEGER)")
    con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ValueError, match="boom"):
        with transaction(con):
            con.execute("DELETE FROM t")
            con.execute("INSERT INTO t VALUES (7)")
            raise ValueError("boom")
    assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    with pytest.raises(duckdb.Error):
        with transaction(con):
            con.execute("INSERT INTO t VALUES (8)")
            con.execute("INSERT INTO t VALUES ('not a number')")
    assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
