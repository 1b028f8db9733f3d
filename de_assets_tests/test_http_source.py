"""The HTTP API source against a real loopback server that injects 429s, 500s, slow responses,
malformed pages and a dead endpoint."""

import json
import threading
import time
import urllib.parse
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from de_assets.lib import http_source
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
    [letter] = con.execute("SELECT cursor, status, error, body_excerpt FROM raw.http_dead_letters").fetchall()
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
    [(status, error)] = con.execute("SELECT status, error FROM raw.http_dead_letters").fetchall()
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
