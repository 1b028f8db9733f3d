"""The HTTP API source against a real loopback server that injects 429s, 500s, slow responses,
malformed pages and a dead endpoint. Its cursor, breaker and dead letters live in the catalog
database (`lib/ops_store.py`), never in the warehouse file."""

import json
import threading
import time
import urllib.parse
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pytest
import sqlalchemy as sa

from de_assets.lib import http_source, ops_store
from de_assets.lib.http_source import HttpPolicy

DAY = date(2026, 11, 20)
EVENTS = [{"messageId": f"api-{i}", "type": "track", "event": "Product Viewed", "userId": f"u{i % 7}",
           "timestamp": f"2026-11-20T10:{i // 60:02d}:{i % 60:02d}Z"} for i in range(95)]


class FakeApi:
    """Pages of `limit` events by offset cursor; `faults[n]` overrides the n-th request (1-based)."""

    def __init__(self, faults=None, always=None):
        self.faults, self.always, self.requests = faults or {}, always, 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                api.requests += 1
                fault = api.always or api.faults.get(api.requests)
                if fault == "slow":
                    time.sleep(0.5)
                if fault in (429, 500, 503):
                    self.send_response(fault)
                    if fault == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                offset, limit = int(query.get("cursor", ["0"])[0]), int(query["limit"][0])
                page = EVENTS[offset:offset + limit]
                nxt = str(offset + limit) if offset + limit < len(EVENTS) else None
                body = b'{"events": [{"broken"' if fault == "malformed" else json.dumps(
                    {"events": page, "next_cursor": nxt}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except BrokenPipeError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/events"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_factory():
    servers = []

    def make(**kwargs):
        servers.append(FakeApi(**kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


FAST = HttpPolicy(read_timeout_s=0.2, connect_timeout_s=0.5, retries=3, backoff_s=0.0, page_size=20,
                  breaker_threshold=5, breaker_cooldown_s=60)


@pytest.fixture
def con(tmp_path):
    """The catalog database (SQLite, as by default) with the operational tables: what `pull` is given."""
    engine = ops_store.ensure(sa.create_engine(f"sqlite:///{tmp_path / 'catalog.db'}"))
    yield engine
    engine.dispose()


def _rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(row) for row in c.execute(sa.text(sql)).fetchall()]


def _landed(root):
    lines = [json.loads(line) for f in sorted((root / "events" / DAY.isoformat()).glob("api-*.ndjson"))
             for line in f.read_text().splitlines()]
    return [e["messageId"] for e in lines]


def test_every_good_record_lands_exactly_once_through_faults(con, tmp_path, api_factory):
    api = api_factory(faults={1: 429, 2: 500, 4: "slow", 6: "malformed", 8: 503})
    sleeps = []
    report = http_source.pull(con, api.url, str(tmp_path), DAY, FAST, sleep=sleeps.append)
    assert sorted(_landed(tmp_path)) == sorted(e["messageId"] for e in EVENTS)  # 95 records, once each
    assert report.pages == 5 and report.records == 95 and report.dead_letters == 0
    assert report.retries == 5 and len(sleeps) == 5  # 429, 500, timeout, malformed, 503
    # a second pull from the saved cursor re-reads only the last page: same bytes, same file, nothing new
    files = sorted(p.name for p in (tmp_path / "events" / DAY.isoformat()).iterdir())
    again = http_source.pull(con, api.url, str(tmp_path), DAY, FAST, sleep=sleeps.append)
    assert again.pages == 1 and sorted(p.name for p in (tmp_path / "events" / DAY.isoformat()).iterdir()) == files
    assert not any(p.name.startswith(".") for p in (tmp_path / "events" / DAY.isoformat()).iterdir())


def test_a_page_that_stays_bad_is_dead_lettered_and_retried_next_time(con, tmp_path, api_factory):
    api = api_factory(faults={n: "malformed" for n in range(2, 6)})  # page 2 bad on all 4 attempts
    report = http_source.pull(con, api.url, str(tmp_path), DAY, FAST, sleep=lambda s: None)
    assert report.pages == 1 and report.dead_letters == 1 and "page stayed bad" in report.stopped_because
    [letter] = _rows(con, "SELECT cursor, status, error, body_excerpt FROM de_assets_http_dead_letters")
    assert letter[0] == "20" and "malformed page" in letter[2] and letter[3].startswith('{"events"')
    # the cursor still points at the bad page: the next pull gets it (the API recovered) and the rest
    report = http_source.pull(con, api.url, str(tmp_path), DAY, FAST, sleep=lambda s: None)
    assert sorted(_landed(tmp_path)) == sorted(e["messageId"] for e in EVENTS)


def test_circuit_breaker_stops_hammering_a_dead_endpoint(con, tmp_path, api_factory):
    api = api_factory(always=503)
    clock = [time.time()]
    from datetime import datetime, timezone

    now = lambda: datetime.fromtimestamp(clock[0], timezone.utc).replace(tzinfo=None)  # noqa: E731
    report = http_source.pull(con, api.url, str(tmp_path), DAY, FAST, sleep=lambda s: None, now=now)
    assert not report.breaker_open and api.requests == 4  # retries + 1, fewer than the threshold of 5
    assert report.dead_letters == 1
    report = http_source.pull(con, api.url, str(tmp_path), DAY, FAST, sleep=lambda s: None, now=now)
    assert report.breaker_open and api.requests == 5  # the 5th failure in a row opened the circuit
    report = http_source.pull(con, api.url, str(tmp_path), DAY, FAST, sleep=lambda s: None, now=now)
    assert report.breaker_open and api.requests == 5  # open: no request at all
    assert "circuit open until" in report.stopped_because
    clock[0] += 61  # after the cool-down it tries again (and the API is back)
    api.always = None
    report = http_source.pull(con, api.url, str(tmp_path), DAY, FAST, sleep=lambda s: None, now=now)
    assert not report.breaker_open and report.records == 95


def test_a_dead_port_is_a_connection_error_not_a_crash(con, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = http_source.pull(con, f"http://127.0.0.1:{port}/x", str(tmp_path), DAY, FAST, sleep=lambda s: None)
    assert report.dead_letters == 1 and report.records == 0
    [(status, error)] = _rows(con, "SELECT status, error FROM de_assets_http_dead_letters")
    assert status is None and "ConnectionRefusedError" in error


def test_api_events_join_the_raw_layer_exactly_once_through_dagster(tmp_path, api_factory):
    from de_assets_tests.conftest import Pipeline

    api = api_factory(faults={1: 429, 3: "slow", 5: 500})
    landing = tmp_path / "landing"
    landing.mkdir()
    p = Pipeline(tmp_path, landing, events_api_url=api.url)
    pull = p.defs.resolve_job_def("pull_events_api")
    config = {"ops": {"landing__events_api": {"config": {"arrival_day": DAY.isoformat(), "read_timeout_s": 0.2,
                                                         "backoff_s": 0.0, "page_size": 20}}}}
    for _ in range(2):  # pulling twice and ingesting twice still ingests every record once
        result = pull.execute_in_process(instance=p.instance, run_config=config)
        assert result.success
        assert p.run(DAY.isoformat()).success
    assert p.query("SELECT count(*) n, count(DISTINCT message_id) d FROM raw.events").values.tolist() == [[95, 95]]
    assert p.query("SELECT count(*) n FROM clean.events").n[0] == 95
    assert p.query("SELECT count(*) n FROM raw.source_files WHERE path LIKE 'events/%/api-%'").n[0] == 5
    [event] = [e for e in result.get_asset_materialization_events()]
    assert event.materialization.metadata["records"].value == 15  # the 2nd pull re-read only the last page (80..94)


def test_the_pull_does_not_wait_for_a_step_holding_the_warehouse(tmp_path, api_factory, monkeypatch):
    from de_assets_tests.conftest import Pipeline
    from de_assets_tests.test_warehouse_lock import hold

    api = api_factory()
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("DE_ASSETS_LOCK_WAIT_S", "1")  # a step that needed the file would fail after 1 s
    p = Pipeline(tmp_path, landing, events_api_url=api.url)
    config = {"ops": {"landing__events_api": {"config": {"arrival_day": DAY.isoformat(), "page_size": 20}}}}
    pull = p.defs.resolve_job_def("pull_events_api")
    assert pull.execute_in_process(instance=p.instance, run_config=config).success  # creates warehouse and catalog
    api.requests = 0
    holder, release = hold(str(p.db), "turn")  # a step of another run writes the warehouse
    try:
        result = pull.execute_in_process(instance=p.instance, run_config=config, raise_on_error=False)
    finally:
        release()
    assert result.success
    assert api.requests == 1  # from the saved cursor: the last page only


def test_state_an_earlier_version_kept_in_the_warehouse_moves_to_the_catalog_once(tmp_path, api_factory):
    from de_assets.resources import RunMode, Warehouse

    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as old:  # what an earlier version left: cursor at 40, one dead letter
        old.execute("CREATE SCHEMA raw")
        old.execute("CREATE TABLE raw.http_source_state (source VARCHAR, cursor VARCHAR, "
                    "consecutive_failures INTEGER, open_until TIMESTAMP, updated_at TIMESTAMP)")
        old.execute("INSERT INTO raw.http_source_state VALUES ('events_api', '40', 0, NULL, TIMESTAMP '2026-11-19 10:00')")
        old.execute("CREATE TABLE raw.http_dead_letters (source VARCHAR, cursor VARCHAR, url VARCHAR, status INTEGER, "
                    "error VARCHAR, body_excerpt VARCHAR, failed_at TIMESTAMP)")
        old.execute("INSERT INTO raw.http_dead_letters VALUES ('events_api', '40', 'http://x', 500, 'HTTP 500', "
                    "'busy', TIMESTAMP '2026-11-19 09:00')")
    engine = Warehouse(database=str(db), run_mode=RunMode()).ops_engine()
    assert _rows(engine, "SELECT source, cursor FROM de_assets_http_source_state") == [("events_api", "40")]
    assert _rows(engine, "SELECT cursor, status, error FROM de_assets_http_dead_letters") == [("40", 500, "HTTP 500")]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'http_%'").fetchone()[0] == 0
    api = api_factory()
    report = http_source.pull(engine, api.url, str(tmp_path / "landing"), DAY, FAST, sleep=lambda s: None)
    assert report.records == 55  # events 40..94: the pull went on from the adopted cursor
    assert Warehouse(database=str(db), run_mode=RunMode()).ops_engine() is not None  # nothing left to adopt
    assert _rows(engine, "SELECT count(*) FROM de_assets_http_dead_letters") == [(1,)]
