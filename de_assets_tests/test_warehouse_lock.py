"""Steps of runs at once take turns on the warehouse file (`resources._connection_in_turn`): a step
that finds the file taken by another process says so, waits, and gets its connection once the other
lets go; past its wait limit it fails with an error naming the lock. The turn is an `flock` on
`<database>.lock`; a process that opened the file without taking a turn (a notebook) is waited out
on DuckDB's own lock."""

import fcntl
import subprocess
import sys
import threading

import duckdb
import pytest

from de_assets.resources import _connection_in_turn

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
