"""Steps of runs at once take turns on the warehouse file (`resources._connection_in_turn`): a step
that finds the file taken by another process says so, waits, and gets its connection once the other
lets go; past its wait limit it fails with an error naming the lock. The turn is an `flock` on
`<database>.lock`; a process that opened the file without taking a turn (a notebook) is waited out
on DuckDB's own lock."""

import fcntl
import subprocess
import sys
import threading

import dagster as dg
import duckdb
import pytest

from de_assets.lib import ingest
from de_assets.resources import _connection_in_turn
from de_assets_tests.conftest import TEST_KEY, Pipeline

# Another process holding the file, in its turn (like a step of another run) or not (a notebook).
HOLDER = """
import sys, duckdb
from de_assets.resources import _connection_in_turn
database, how = sys.argv[1], sys.argv[2]
if how == "turn":
    with _connection_in_turn(database, {}, 60) as con:
        print("locked", flush=True)
        sys.stdin.readline()
else:
    con = duckdb.connect(database)
    print("locked", flush=True)
    sys.stdin.readline()
    con.close()
print("released", flush=True)
"""


class Log:
    def __init__(self):
        self.lines: list[str] = []
        self.said = threading.Event()

    def info(self, message: str) -> None:
        self.lines.append(message)
        self.said.set()


def hold(database: str, how: str):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, database, how], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"

    def release():
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        holder.wait(30)

    return holder, release


@pytest.fixture
def database(tmp_path):
    path = str(tmp_path / "warehouse.duckdb")
    duckdb.connect(path).close()
    return path


@pytest.mark.parametrize("how", ["turn", "outside"])
def test_a_step_waits_for_the_file_and_gets_it_when_the_other_process_lets_go(database, how):
    holder, release = hold(database, how)
    try:
        log, got, done = Log(), [], threading.Event()

        def step():
            with _connection_in_turn(database, {}, 600, log) as con:
                got.append(con.execute("SELECT 42").fetchone())
                done.wait(60)

        waiter = threading.Thread(target=step)
        waiter.start()
        assert log.said.wait(60), "the waiting step never said it was waiting"
        assert log.lines == ["waiting for the warehouse file's lock (held by another process; up to 600 s)"]
        assert not got  # still waiting: the other process holds the file
        release()
        done.set()
        waiter.join(60)
        assert not waiter.is_alive()
        assert got == [(42,)]
        assert len(log.lines) == 2 and log.lines[1].startswith("got the warehouse file's lock after ")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("how", ["turn", "outside"])
def test_past_the_wait_limit_the_step_fails_naming_the_lock(database, how):
    holder, release = hold(database, how)
    try:
        with pytest.raises(duckdb.IOException, match="lock"):
            with _connection_in_turn(database, {}, 0.3, Log()):
                pass
        release()
    finally:
        holder.kill()
        holder.wait()


def test_one_process_opens_the_file_twice_without_waiting_and_lets_go_when_both_are_closed(database):
    log = Log()
    with _connection_in_turn(database, {}, 600, log) as first:
        with _connection_in_turn(database, {}, 600, log) as second:  # DuckDB shares one database per process
            first.execute("CREATE TABLE t AS SELECT 1 AS x")
            assert second.execute("SELECT x FROM t").fetchall() == [(1,)]
        with open(f"{database}.lock", "a") as other:  # still this process's turn (a new open file = another holder)
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(f"{database}.lock", "a") as other:  # both closed: the turn is free
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_UN)
    assert log.lines == []


def test_a_free_file_opens_at_once_without_a_word(tmp_path):
    log = Log()
    with _connection_in_turn(str(tmp_path / "warehouse.duckdb"), {}, 600, log) as con:
        assert con.execute("SELECT 1").fetchone() == (1,)
    assert log.lines == []


# Another process that opens the warehouse file itself (no turn): it can only while no step holds it.
OPENER = """
import sys, duckdb
with duckdb.connect(sys.argv[1]) as con:
    print(con.execute("SELECT count(*) FROM raw.source_files").fetchone()[0])
"""

# Another process ingesting the same day's files in its turn (what a second run of the day would do).
INGESTER = """
import sys
from datetime import date
from de_assets.lib import ingest, privacy
from de_assets.resources import _connection_in_turn
database, landing, day = sys.argv[1], sys.argv[2], date.fromisoformat(sys.argv[3])
with _connection_in_turn(database, {}, 60) as con:
    privacy.install_macros(con, sys.argv[4])
    ingest.ingest_day(con, landing, "events", day, "other-run", ingest.IngestReport("events"))
"""

RAW_EVENTS_KEY = dg.AssetKey(["raw", "raw_events"])


def test_a_raw_step_reads_and_projects_its_files_without_holding_the_warehouse(pipeline, monkeypatch):
    assert pipeline.run("2026-11-01", selection=[RAW_EVENTS_KEY]).success  # the file exists, day 1 registered
    opened = []
    prepare = ingest.prepare

    def prepare_while_another_process_opens_the_file(*args, **kwargs):
        opened.append(subprocess.run([sys.executable, "-c", OPENER, str(pipeline.db)], capture_output=True,
                                     text=True, timeout=60))
        return prepare(*args, **kwargs)

    monkeypatch.setattr(ingest, "prepare", prepare_while_another_process_opens_the_file)
    assert pipeline.run("2026-11-02", selection=[RAW_EVENTS_KEY]).success
    [other] = opened
    assert other.returncode == 0, other.stderr  # it would fail on DuckDB's lock if the step held the file
    assert int(other.stdout) > 0  # it read day 1's registrations
    assert pipeline.query("SELECT count(DISTINCT arrival_date) AS n FROM raw.events")["n"][0] == 2


def test_files_another_process_ingested_meanwhile_are_not_ingested_twice(tmp_path, golden_landing, monkeypatch):
    day = "2026-11-02"
    alone = Pipeline(tmp_path / "alone", golden_landing)
    assert alone.run(day, selection=[RAW_EVENTS_KEY]).success
    pipeline = Pipeline(tmp_path / "raced", golden_landing)
    assert pipeline.run("2026-11-01", selection=[RAW_EVENTS_KEY]).success  # creates the file
    calls = []
    prepare = ingest.prepare

    def prepare_while_another_process_ingests_the_day(*args, **kwargs):
        if not calls:  # the first time only: the second prepare sees the other process's registrations
            subprocess.run([sys.executable, "-c", INGESTER, str(pipeline.db), str(golden_landing), day, TEST_KEY],
                           check=True, timeout=120)
        calls.append(1)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(ingest, "prepare", prepare_while_another_process_ingests_the_day)
    result = pipeline.run(day, selection=[RAW_EVENTS_KEY])
    assert result.success
    sql = ("SELECT count(*) AS rows, count(DISTINCT (source_file, line_no)) AS lines FROM raw.events "
           f"WHERE arrival_date = DATE '{day}'")
    assert pipeline.query(sql).to_dict("records") == alone.query(sql).to_dict("records")
    files = f"SELECT path, status, rows FROM raw.source_files WHERE arrival_date = DATE '{day}' ORDER BY path"
    assert pipeline.query(files).to_dict("records") == alone.query(files).to_dict("records")
    assert set(pipeline.query(f"SELECT DISTINCT run_id FROM raw.source_files WHERE arrival_date = DATE '{day}'")["run_id"]) == {"other-run"}
    assert len(calls) == 2  # the commit found the registry changed and the step read the day again
