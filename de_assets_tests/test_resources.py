"""The warehouse resource: `get_connection()` (inherited from DuckDBResource) behaves like `connect()`."""

from types import SimpleNamespace

import duckdb

from de_assets.resources import RunMode, Warehouse


def _settings(con) -> tuple:
    return con.execute("SELECT current_setting('TimeZone'), current_setting('memory_limit'), "
                       "current_setting('preserve_insertion_order')").fetchone()


def test_get_connection_is_connect(tmp_path):
    db = tmp_path / "w.duckdb"
    warehouse = Warehouse(database=str(db), run_mode=RunMode(), memory_limit="100MB")
    with warehouse.get_connection() as con:
        # 100 MB = 100,000,000 bytes = 95.3 MiB; UTC and streaming inserts, like connect()
        assert _settings(con) == ("UTC", "95.3 MiB", False)
        assert con.execute("SELECT count(*) FROM marts.daily_engagement").fetchone()[0] == 0  # tables created
        con.execute("CREATE TABLE probe (x INTEGER)")
    with warehouse.connect() as con:
        assert _settings(con) == ("UTC", "95.3 MiB", False)
        assert con.execute("SELECT count(*) FROM probe").fetchone()[0] == 0


def test_get_connection_in_a_dry_run_writes_the_scratch_copy_only(tmp_path):
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE kept (x INTEGER)")
        con.execute("INSERT INTO kept VALUES (1)")
    warehouse = Warehouse(database=str(db), run_mode=RunMode(dry_run=True))
    context = SimpleNamespace(run=SimpleNamespace(run_id="r1", tags={}), instance=None)
    warehouse.setup_for_execution(context)
    try:
        with warehouse.get_connection() as con:
            assert con.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"
            assert con.execute("SELECT x FROM stored.kept").fetchall() == [(1,)]  # the stored file, read-only
            con.execute("DELETE FROM kept")
            con.execute("CREATE TABLE written (x INTEGER)")
    finally:
        warehouse.teardown_after_execution(context)
    with duckdb.connect(str(db), read_only=True) as con:  # the stored warehouse is untouched
        assert con.execute("SELECT x FROM kept").fetchall() == [(1,)]
        tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        assert ("written",) not in tables and ("kept",) in tables
    assert not (tmp_path / "w.duckdb.dry_run").exists()
