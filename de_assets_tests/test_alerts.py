"""Alerts: stored once per dedupe key, paged only when new, webhook retried against a real local
HTTP server (loopback only)."""

import json
import socket
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pytest
import sqlalchemy as sa

from de_assets.lib import alerts, ops_store, served
from de_assets.lib.alerts import Alert, post_webhook, record

T1 = datetime(2026, 11, 2, 6, 0, 0)
T2 = datetime(2026, 11, 3, 6, 30, 0)
NO_SLEEP = lambda s: None  # noqa: E731


def _alert(**kw) -> Alert:
    fields = dict(severity="error", kind="check_failed", asset="clean/clean_events", partition="2026-11-01",
                  message="3 rows failed not_null", run_id="run-1", discriminator="not_null")
    fields.update(kw)
    return Alert(**fields)


class ListLog:
    """A logger-like object that keeps (level, message) pairs."""

    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(("info", msg))

    def warning(self, msg):
        self.lines.append(("warning", msg))

    def error(self, msg):
        self.lines.append(("error", msg))


@pytest.fixture
def store(tmp_path):
    """A catalog database (SQLite file) with the operational tables, as `Warehouse.ops_engine` gives."""
    return ops_store.ensure(sa.create_engine(f"sqlite:///{tmp_path / 'catalog.db'}"))


def _row(store, key):
    t = ops_store.ALERTS
    with store.connect() as c:
        return tuple(c.execute(sa.select(
            t.c.severity, t.c.kind, t.c.asset, t.c.partition, t.c.message, t.c.run_id, t.c.first_seen,
            t.c.last_seen, t.c.occurrences, t.c.webhook_status).where(t.c.dedupe_key == key)).one())


def _count(store) -> int:
    with store.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(ops_store.ALERTS)).scalar()


# --- a scripted local webhook server ------------------------------------------------------------


class Server:
    """ThreadingHTTPServer on 127.0.0.1:<free port>. Answers with `statuses` in order (the last one
    repeats); a status of "slow" sleeps `slow_seconds` before answering 200. Keeps every body."""

    def __init__(self, statuses, headers=None, slow_seconds=0.6):
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.slow_seconds = slow_seconds
        self.bodies = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server.lock:
                    n = len(server.bodies)
                    server.bodies.append(body)
                status = server.statuses[min(n, len(server.statuses) - 1)]
                try:
                    if status == "slow":
                        time.sleep(server.slow_seconds)
                        status = 200
                    self.send_response(status)
                    for name, value in server.headers.get(status, {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def requests(self) -> int:
        with self.lock:
            return len(self.bodies)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _dead_url() -> str:
    """A loopback URL on a port nobody listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/hook"


# --- Alert -------------------------------------------------------------------------------------


def test_default_dedupe_key_and_payload():
    a = _alert()
    assert a.dedupe_key == "check_failed|clean/clean_events|2026-11-01|not_null"
    d = a.as_dict()
    assert d == {"severity": "error", "kind": "check_failed", "asset": "clean/clean_events", "partition": "2026-11-01",
                 "message": "3 rows failed not_null", "run_id": "run-1", "dedupe_key": a.dedupe_key}
    json.dumps(d)  # JSON-able


def test_keys_differ_by_partition_and_discriminator_explicit_key_kept():
    keys = {_alert().dedupe_key, _alert(partition="2026-11-02").dedupe_key,
            _alert(discriminator="unique_key").dedupe_key, _alert(kind="slo_breach").dedupe_key}
    assert len(keys) == 4
    assert _alert(dedupe_key="my-key").dedupe_key == "my-key"
    # the message and run id are not part of the identity
    assert _alert(message="other", run_id="run-2").dedupe_key == _alert().dedupe_key


def test_invalid_severity_or_kind_raises():
    with pytest.raises(ValueError, match="severity"):
        _alert(severity="info")
    with pytest.raises(ValueError, match="kind"):
        _alert(kind="oops")


# --- record ------------------------------------------------------------------------------------


def test_record_new_then_repeat(store):
    a = _alert()
    assert record(store, [a], log=ListLog(), now=T1) == [a]
    assert _row(store, a.dedupe_key) == ("error", "check_failed", "clean/clean_events", "2026-11-01",
                                       "3 rows failed not_null", "run-1", T1, T1, 1, "not_configured")

    log = ListLog()
    assert record(store, [_alert(run_id="run-2")], log=log, now=T2) == []
    first_seen, last_seen, occurrences = _row(store, a.dedupe_key)[6:9]
    assert (first_seen, last_seen, occurrences) == (T1, T2, 2)
    assert _row(store, a.dedupe_key)[5] == "run-1"  # the run that raised it first
    assert [level for level, _ in log.lines] == ["info"]  # a repeat is not paged
    assert _count(store) == 1


def test_record_duplicates_in_one_call_and_distinct_keys(store):
    a, b = _alert(), _alert(partition="2026-11-02")
    assert record(store, [a, a, b, a], log=ListLog(), now=T1) == [a, b]
    assert _row(store, a.dedupe_key)[8] == 3
    assert _row(store, b.dedupe_key)[8] == 1


def test_structured_log_line(store):
    log = ListLog()
    record(store, [_alert(), _alert(severity="warning", kind="kpi_anomaly", discriminator="dau")], log=log, now=T1)
    (level1, line1), (level2, line2) = log.lines
    assert (level1, level2) == ("error", "warning")
    assert line1.startswith("ALERT ")
    parsed = json.loads(line1[len("ALERT "):])
    assert parsed["dedupe_key"] == "check_failed|clean/clean_events|2026-11-01|not_null"
    assert parsed["severity"] == "error" and parsed["run_id"] == "run-1"
    assert json.loads(line2[len("ALERT "):])["dedupe_key"] == "kpi_anomaly|clean/clean_events|2026-11-01|dau"


def test_record_accepts_a_standard_logger(store, caplog):
    with caplog.at_level("WARNING", logger="de_assets.alerts"):
        record(store, [_alert(severity="critical")], now=T1)
    assert any(r.levelname == "ERROR" and r.getMessage().startswith("ALERT ") for r in caplog.records)


# --- post_webhook ------------------------------------------------------------------------------


def test_webhook_delivers_payload():
    a = _alert()
    with Server([200]) as srv:
        assert post_webhook(srv.url, {**a.as_dict(), "source": "de_assets"}, sleep=NO_SLEEP) == "delivered"
    assert srv.requests == 1
    body = json.loads(srv.bodies[0])
    assert body["source"] == "de_assets"
    assert body["dedupe_key"] == a.dedupe_key and body["severity"] == "error" and body["asset"] == "clean/clean_events"


def test_webhook_retries_5xx_then_delivers_with_growing_backoff():
    sleeps = []
    with Server([500, 500, 200]) as srv:
        assert post_webhook(srv.url, {"x": 1}, retries=3, backoff=0.5, sleep=sleeps.append) == "delivered"
    assert srv.requests == 3
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 0.55 and 1.0 <= sleeps[1] <= 1.1


def test_webhook_gives_up_after_retries():
    sleeps = []
    with Server([503]) as srv:
        assert post_webhook(srv.url, {"x": 1}, retries=3, sleep=sleeps.append) == "failed"
    assert srv.requests == 4
    assert len(sleeps) == 3 and sleeps[0] < sleeps[1] < sleeps[2]


def test_webhook_backoff_capped():
    sleeps = []
    with Server([503]) as srv:
        post_webhook(srv.url, {"x": 1}, retries=2, backoff=100, sleep=sleeps.append)
    assert sleeps == [alerts.MAX_DELAY_SECONDS] * 2


def test_webhook_4xx_fails_at_once():
    sleeps = []
    with Server([400, 200]) as srv:
        assert post_webhook(srv.url, {"x": 1}, sleep=sleeps.append) == "failed"
    assert srv.requests == 1 and sleeps == []


def test_webhook_timeout_is_retried_then_fails():
    # The server does answer 200, but only after 0.5 s: a client that waited past its 0.2 s timeout
    # would report "delivered". Giving up on each attempt, it retries once (one back-off), then fails.
    sleeps = []
    with Server(["slow"], slow_seconds=0.5) as srv:
        assert post_webhook(srv.url, {"x": 1}, timeout=0.2, retries=1, sleep=sleeps.append) == "failed"
        assert srv.requests == 2
    assert len(sleeps) == 1


def test_webhook_429_honours_retry_after():
    sleeps = []
    with Server([429, 200], headers={429: {"Retry-After": "0"}}) as srv:
        assert post_webhook(srv.url, {"x": 1}, sleep=sleeps.append) == "delivered"
    assert srv.requests == 2 and sleeps == [0.0]


def test_webhook_never_raises():
    assert post_webhook(_dead_url(), {"x": 1}, retries=1, sleep=NO_SLEEP) == "failed"
    assert post_webhook("not a url", {"x": 1}, sleep=NO_SLEEP) == "failed"
    assert post_webhook("http://127.0.0.1:1/", {"x": object()}, sleep=NO_SLEEP) == "failed"  # not JSON-able


# --- record + webhook --------------------------------------------------------------------------


def test_record_pages_only_new_alerts(store):
    a = _alert()
    with Server([200]) as srv:
        assert record(store, [a, a], webhook_url=srv.url, log=ListLog(), now=T1, sleep=NO_SLEEP) == [a]
        assert record(store, [a], webhook_url=srv.url, log=ListLog(), now=T2, sleep=NO_SLEEP) == []
    assert srv.requests == 1
    assert json.loads(srv.bodies[0])["dedupe_key"] == a.dedupe_key
    assert _row(store, a.dedupe_key)[8:] == (3, "delivered")


def test_record_with_dead_webhook_stores_failed(store):
    a = _alert(severity="critical", kind="run_failure", asset="daily_job", partition="", discriminator="")
    log = ListLog()
    assert record(store, [a], webhook_url=_dead_url(), retries=2, log=log, now=T1, sleep=NO_SLEEP) == [a]
    assert _row(store, a.dedupe_key)[9] == "failed"
    assert [level for level, _ in log.lines] == ["error", "warning"]


def test_two_runs_raising_the_same_new_alert_at_once_page_once(store):
    """The row is inserted before the webhook is called and the dedupe key is the primary key, so of
    runs raising one new alert at the same moment exactly one pages; the others count repeats. (With
    look-then-insert, every run that looked before the first insert would page: the slow webhook
    keeps that window open for half a second.)"""
    a = _alert()
    start = threading.Barrier(4)
    new = []

    def raise_it():
        start.wait()
        new.extend(record(store, [a], webhook_url=srv.url, log=ListLog(), now=T1, sleep=NO_SLEEP))

    with Server(["slow"], slow_seconds=0.5) as srv:
        threads = [threading.Thread(target=raise_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.requests == 1
    assert new == [a]
    assert _row(store, a.dedupe_key)[8:] == (4, "delivered")


def test_a_dry_run_records_nothing_and_says_what_it_would_raise(store):
    known, fresh = _alert(), _alert(partition="2026-11-02")
    record(store, [known], log=ListLog(), now=T1)
    log = ListLog()
    assert record(store, [known, fresh, fresh], log=log, now=T2, dry_run=True) == [fresh]
    assert _count(store) == 1 and _row(store, known.dedupe_key)[7:9] == (T1, 1)  # not even a repeat counted
    assert [level for level, _ in log.lines] == ["info", "info", "info"]
    assert sum("a real run would raise" in m for _, m in log.lines) == 1


def test_load_alerts_gives_the_served_table(store):
    a, b = _alert(), _alert(severity="warning", kind="kpi_anomaly", discriminator="dau", partition="")
    record(store, [a, b, a], log=ListLog(), now=T1)
    with duckdb.connect() as con:
        ops_store.load_alerts(store, con)
        rows = con.execute('SELECT kind, "partition", occurrences, first_seen FROM pipeline_health.alerts '
                           "ORDER BY kind").fetchall()
    assert rows == [("check_failed", "2026-11-01", 2, T1), ("kpi_anomaly", "", 1, T1)]


def test_alerts_of_an_earlier_warehouse_are_moved_once_and_newer_ones_kept(tmp_path):
    """A warehouse file of an earlier version kept the alerts in `pipeline_health.alerts`: the first
    `ops_engine()` moves the rows whose key is not in the catalog database yet (an alert raised there
    since is kept as it is), records the move, and drops the old table."""
    from de_assets.lib.tables import ALERTS
    from de_assets.resources import RunMode, Warehouse

    db = tmp_path / "warehouse.duckdb"
    old_only, both = _alert(partition="2026-10-30"), _alert()
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA pipeline_health")
        con.execute(ALERTS.ddl())
        for alert, n in ((old_only, 5), (both, 7)):
            con.execute('INSERT INTO pipeline_health.alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                        [alert.dedupe_key, alert.severity, alert.kind, alert.asset, alert.partition,
                         alert.message, "old-run", T1, T1, n, "delivered"])
    catalog = ops_store.ensure(served.open_lake(str(db)).engine)
    record(catalog, [both], log=ListLog(), now=T2)  # raised since the upgrade, before the move

    engine = Warehouse(database=str(db), run_mode=RunMode()).ops_engine()
    assert _row(engine, old_only.dedupe_key)[5:] == ("old-run", T1, T1, 5, "delivered")
    assert _row(engine, both.dedupe_key)[5:] == ("run-1", T2, T2, 1, "not_configured")  # the newer one
    assert _count(engine) == 2
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'alerts'").fetchone()[0] == 0
    assert ops_store.to_adopt(engine) == []
