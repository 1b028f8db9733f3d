"""Alerts: stored once per dedupe key, paged only when new, webhook retried against a real local
HTTP server (loopback only)."""

import json
import socket
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from de_assets.lib import alerts
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


def _row(con, key):
    return con.execute(
        'SELECT severity, kind, asset, "partition", message, run_id, first_seen, last_seen, occurrences, '
        "webhook_status FROM pipeline_health.alerts WHERE dedupe_key = ?",
        [key],
    ).fetchone()


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


def test_record_new_then_repeat(con):
    a = _alert()
    assert record(con, [a], log=ListLog(), now=T1) == [a]
    assert _row(con, a.dedupe_key) == ("error", "check_failed", "clean/clean_events", "2026-11-01",
                                       "3 rows failed not_null", "run-1", T1, T1, 1, "not_configured")

    log = ListLog()
    assert record(con, [_alert(run_id="run-2")], log=log, now=T2) == []
    first_seen, last_seen, occurrences = _row(con, a.dedupe_key)[6:9]
    assert (first_seen, last_seen, occurrences) == (T1, T2, 2)
    assert _row(con, a.dedupe_key)[5] == "run-1"  # the run that raised it first
    assert [level for level, _ in log.lines] == ["info"]  # a repeat is not paged
    assert con.execute("SELECT count(*) FROM pipeline_health.alerts").fetchone()[0] == 1


def test_record_duplicates_in_one_call_and_distinct_keys(con):
    a, b = _alert(), _alert(partition="2026-11-02")
    assert record(con, [a, a, b, a], log=ListLog(), now=T1) == [a, b]
    assert _row(con, a.dedupe_key)[8] == 3
    assert _row(con, b.dedupe_key)[8] == 1


def test_structured_log_line(con):
    log = ListLog()
    record(con, [_alert(), _alert(severity="warning", kind="kpi_anomaly", discriminator="dau")], log=log, now=T1)
    (level1, line1), (level2, line2) = log.lines
    assert (level1, level2) == ("error", "warning")
    assert line1.startswith("ALERT ")
    parsed = json.loads(line1[len("ALERT "):])
    assert parsed["dedupe_key"] == "check_failed|clean/clean_events|2026-11-01|not_null"
    assert parsed["severity"] == "error" and parsed["run_id"] == "run-1"
    assert json.loads(line2[len("ALERT "):])["dedupe_key"] == "kpi_anomaly|clean/clean_events|2026-11-01|dau"


def test_record_accepts_a_standard_logger(con, caplog):
    with caplog.at_level("WARNING", logger="de_assets.alerts"):
        record(con, [_alert(severity="critical")], now=T1)
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


def test_record_pages_only_new_alerts(con):
    a = _alert()
    with Server([200]) as srv:
        assert record(con, [a, a], webhook_url=srv.url, log=ListLog(), now=T1, sleep=NO_SLEEP) == [a]
        assert record(con, [a], webhook_url=srv.url, log=ListLog(), now=T2, sleep=NO_SLEEP) == []
    assert srv.requests == 1
    assert json.loads(srv.bodies[0])["dedupe_key"] == a.dedupe_key
    assert _row(con, a.dedupe_key)[8:] == (3, "delivered")


def test_record_with_dead_webhook_stores_failed(con):
    a = _alert(severity="critical", kind="run_failure", asset="daily_job", partition="", discriminator="")
    log = ListLog()
    assert record(con, [a], webhook_url=_dead_url(), retries=2, log=log, now=T1, sleep=NO_SLEEP) == [a]
    assert _row(con, a.dedupe_key)[9] == "failed"
    assert [level for level, _ in log.lines] == ["error", "warning"]
