"""Events from a JSON HTTP API (R2), landed as files so they join the same raw layer.

The API is paged by cursor: ``GET <url>?limit=N[&cursor=C]`` answers
``{"events": [<Segment event>, ...], "next_cursor": "<token>" | null}``. Each good page is written
to ``<landing>/events/<arrival day>/api-<sha of the page's cursor>.ndjson`` (write to a hidden
name, then rename), so the raw layer ingests it like any landed file: checksummed, re-delivery
safe, every record pseudonymized at the door. Files are named by their content hash, so a page
fetched twice (after a crash) is the same file and is ingested once. The cursor is saved after
each landed page; at the end of the data (an empty page or no `next_cursor`) it stays, and a last
page that grew meanwhile lands as a new file whose repeated events are counted as duplicates.

Robustness:
* connect and read timeouts (``http.client``: the connect timeout, then the socket's read timeout);
* retries on 429, 5xx, timeouts, connection errors and malformed pages, with exponential backoff
  and jitter (``Retry-After`` honoured, capped);
* a circuit breaker: after ``breaker_threshold`` consecutive failed requests it opens for
  ``breaker_cooldown_s``; while open, no request is made at all (state in the catalog database's
  `de_assets_http_source_state`, `lib/ops_store.py`, so it holds across runs and machines);
* a page that stays bad after the retries gets a dead-letter record (`de_assets_http_dead_letters`:
  cursor, status, error, an excerpt of the body) and the pull stops there; the saved cursor still
  points at that page, so the next pull retries it and nothing is skipped.

The pull never touches the DuckDB warehouse: it takes no turn on the file while it waits for the
network.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

from de_assets.lib.days import utc_now
from de_assets.lib.ops_store import HTTP_DEAD_LETTERS, HTTP_SOURCE_STATE
from de_assets.lib.retry import backoff_delay

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class HttpPolicy:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 300.0
    page_size: int = 1000
    max_pages: int = 10_000


class PageError(Exception):
    def __init__(self, message: str, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.status, self.body = status, body


@dataclass
class PullReport:
    pages: int = 0
    records: int = 0
    files: list[str] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    dead_letters: int = 0
    breaker_open: bool = False
    stopped_because: str = "no more pages"


def _get(url: str, policy: HttpPolicy) -> tuple[int, dict, bytes]:
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=policy.connect_timeout_s)
    try:
        conn.connect()
        conn.sock.settimeout(policy.read_timeout_s)
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                     headers={"Accept": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _page_url(base: str, cursor: str | None, limit: int) -> str:
    query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
    return f"{base}{'&' if '?' in base else '?'}{urllib.parse.urlencode(query)}"


def _parse(body: bytes) -> tuple[list[dict], str | None]:
    try:
        page = json.loads(body)
    except ValueError as error:
        raise PageError(f"malformed page: {error}", body=body[:300].decode("utf-8", "replace")) from error
    if not isinstance(page, dict) or not isinstance(page.get("events"), list) or not all(
        isinstance(e, dict) for e in page["events"]
    ):
        raise PageError("malformed page: expected {'events': [objects], 'next_cursor': ...}",
                        body=body[:300].decode("utf-8", "replace"))
    return page["events"], page.get("next_cursor")


class Breaker:
    """Consecutive-failure circuit breaker whose state (with the cursor) is a row of
    `de_assets_http_source_state` in the catalog database (``engine``, `lib/ops_store.py`)."""

    def __init__(self, engine: sa.Engine, source: str, policy: HttpPolicy, now):
        self.engine, self.source, self.policy, self.now = engine, source, policy, now
        state = HTTP_SOURCE_STATE.c
        with engine.connect() as c:
            row = c.execute(sa.select(state.cursor, state.consecutive_failures, state.open_until)
                            .where(state.source == source)).first()
        self.cursor, self.failures, self.open_until = tuple(row) if row else (None, 0, None)

    def is_open(self) -> bool:
        return self.open_until is not None and self.now() < self.open_until

    def success(self) -> None:
        self.failures, self.open_until = 0, None

    def failure(self) -> bool:
        """Count a failed request; True when that opened the breaker."""
        self.failures += 1
        if self.failures >= self.policy.breaker_threshold:
            self.open_until = self.now() + timedelta(seconds=self.policy.breaker_cooldown_s)
            return True
        return False

    def save(self) -> None:
        with self.engine.begin() as c:
            c.execute(sa.delete(HTTP_SOURCE_STATE).where(HTTP_SOURCE_STATE.c.source == self.source))
            c.execute(sa.insert(HTTP_SOURCE_STATE).values(
                source=self.source, cursor=self.cursor, consecutive_failures=self.failures,
                open_until=self.open_until, updated_at=self.now()))


def _write_page(landing_root: str, day: date, events: list[dict]) -> str:
    """Land a page as NDJSON named by its content hash: the same page fetched twice is the same file
    (ingested once, or recognized as a re-delivery on another day)."""
    text = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in events)
    name = f"api-{hashlib.sha256(text.encode()).hexdigest()[:24]}.ndjson"
    folder = Path(landing_root) / "events" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / name).exists():
        hidden = folder / f".{name}.partial"
        hidden.write_text(text)
        hidden.replace(folder / name)
    return f"events/{day.isoformat()}/{name}"


def pull(
    engine: sa.Engine, url: str, landing_root: str, arrival_day: date, policy: HttpPolicy = HttpPolicy(), source: str = "events_api",
    sleep=time.sleep, now=None,
) -> PullReport:
    """Fetch pages from the saved cursor on, land each good page as a file, save the cursor after
    each page (so a crash resumes at the first page not landed). ``engine``: the catalog database
    (`lib/ops_store.py`, tables created)."""
    now = now or utc_now
    report = PullReport()
    breaker = Breaker(engine, source, policy, now)
    if breaker.is_open():
        report.breaker_open, report.stopped_because = True, f"circuit open until {breaker.open_until}"
        return report
    try:
        while report.pages < policy.max_pages:
            page_url = _page_url(url, breaker.cursor, policy.page_size)
            events, next_cursor, error = None, None, None
            for attempt in range(policy.retries + 1):
                report.requests += 1
                retry_after = None
                try:
                    status, headers, body = _get(page_url, policy)
                    if status in RETRYABLE_STATUS:
                        retry_after = headers.get("Retry-After")
                        raise PageError(f"HTTP {status}", status, body[:300].decode("utf-8", "replace"))
                    if status != 200:
                        raise PageError(f"HTTP {status} (not retried)", status, body[:300].decode("utf-8", "replace"))
                    events, next_cursor = _parse(body)
                    breaker.success()
                    break
                except (PageError, OSError, http.client.HTTPException) as failure:  # OSError: timeouts, refusals
                    error = failure if isinstance(failure, PageError) else PageError(f"{type(failure).__name__}: {failure}")
                    if breaker.failure():
                        report.breaker_open = True
                        break
                    if error.status is not None and error.status not in RETRYABLE_STATUS:
                        break
                    if attempt < policy.retries:
                        report.retries += 1
                        sleep(backoff_delay(attempt, policy.backoff_s, policy.max_backoff_s, retry_after))
            if events is None:
                _dead_letter(engine, source, breaker.cursor, page_url, error, now())
                report.dead_letters += 1
                report.stopped_because = ("circuit opened: " if report.breaker_open else "page stayed bad: ") + str(error)
                break
            if events:
                report.files.append(_write_page(landing_root, arrival_day, events))
                report.records += len(events)
            report.pages += 1
            if not events or not next_cursor or next_cursor == breaker.cursor:
                # the end for now: keep the cursor; a page re-read later is landed again only if it grew
                report.stopped_because = "no more pages"
                break
            breaker.cursor = next_cursor
            breaker.save()
    finally:
        breaker.save()
    return report


def _dead_letter(engine: sa.Engine, source: str, cursor: str | None, url: str, error: PageError, at) -> None:
    with engine.begin() as c:
        c.execute(sa.insert(HTTP_DEAD_LETTERS).values(source=source, cursor=cursor, url=url, status=error.status,
                                                      error=str(error), body_excerpt=error.body, failed_at=at))
