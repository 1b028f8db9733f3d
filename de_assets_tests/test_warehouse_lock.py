"""Steps of runs at once take turns on the warehouse file's lock (`resources._connect_with_retry`):
a step that finds the file locked by another process says so, waits, and gets the connection once
the lock is released; past `lock_wait_s` it fails with DuckDB's error, which names the lock."""

import subprocess
import sys
import threading

import duckdb
import pytest

from de_assets.resources import _connect_with_retry

HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
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


@pytest.fixture
def held(tmp_path):
    """The warehouse file, locked by another process until `release()` is called."""
    database = str(tmp_path / "warehouse.duckdb")
    duckdb.connect(database).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, database], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"

    def release():
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"

    yield database, release
    holder.kill()
    holder.wait()


def test_a_step_waits_for_the_lock_and_gets_it_when_the_other_process_lets_go(held):
    database, release = held
    log = Log()
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(_connect_with_retry(database, {}, 600, log)))
    waiter.start()
    assert log.said.wait(60), "the waiting step never said it was waiting"
    assert log.lines == ["waiting for the warehouse file's lock (held by another process; up to 600 s)"]
    assert not got  # still waiting: the other process holds the file
    release()
    waiter.join(60)
    assert not waiter.is_alive()
    [con] = got
    assert con.execute("SELECT 42").fetchone() == (42,)
    con.close()
    assert len(log.lines) == 2 and log.lines[1].startswith("got the warehouse file's lock after ")


def test_past_the_wait_limit_the_step_fails_naming_the_lock(held):
    database, _ = held
    with pytest.raises(duckdb.IOException, match="lock"):
        _connect_with_retry(database, {}, 0.3, Log())


def test_a_free_file_opens_at_once_without_a_word(tmp_path):
    log = Log()
    con = _connect_with_retry(str(tmp_path / "warehouse.duckdb"), {}, 600, log)
    con.close()
    assert log.lines == []
