"""Alerts: record pipeline problems once per dedupe key, and page only the new ones.

Sinks
-----
* Default: a structured log line (``"ALERT " + JSON``, at error level for critical/error alerts and
  warning level for warnings) and a row in the catalog's SQL database (table ``de_assets_alerts``,
  `lib/ops_store.py`; published to the lake as ``pipeline_health.alerts``). Never the warehouse
  file: raising an alert does not wait for a step that holds it.
* Optional: a JSON POST to a webhook (Slack/PagerDuty relay, ...). The URL comes from the
  ``DE_ASSETS_ALERT_WEBHOOK`` environment variable, read by the Dagster ``Alerting`` resource and
  passed in here as ``webhook_url``; this module never reads the environment itself.

Dedupe
------
Every alert has a ``dedupe_key`` (by default ``kind|asset|partition|discriminator``, where the
discriminator is e.g. the check or KPI name), the table's primary key. The first time a key is
recorded a row is inserted and the alert is logged and sent to the webhook. Each later time, only
``last_seen`` and ``occurrences`` of that row are updated: a problem that persists across runs pages
once. The row is inserted *before* the webhook is called, so of two runs raising the same new
alert at once exactly one inserts it and pages; the other counts a repeat.

No Dagster imports here: plain Python + SQLAlchemy, so it is easy to test directly.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from http.client import HTTPException

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from de_assets.lib import ops_store
from de_assets.lib.days import utc_now
from de_assets.lib.retry import backoff_delay

SEVERITIES = ("critical", "error", "warning")
KINDS = ("check_failed", "slo_breach", "kpi_anomaly", "run_failure", "stale_partition", "bad_file")

MAX_DELAY_SECONDS = 30.0
DEFAULT_LOGGER = logging.getLogger("de_assets.alerts")


@dataclass(frozen=True)
class Alert:
    """One problem to report. ``dedupe_key`` is derived from the other fields when left empty."""

    severity: str  # one of SEVERITIES
    kind: str  # one of KINDS
    asset: str  # e.g. "clean/clean_events" (or the job name for run failures)
    partition: str  # e.g. "2026-11-01", "2026-11-01..2026-11-07" or ""
    message: str
    run_id: str | None = None
    dedupe_key: str = ""
    discriminator: str = ""  # e.g. check or KPI name; part of the default key, not stored

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not self.dedupe_key:
            key = f"{self.kind}|{self.asset}|{self.partition}|{self.discriminator}"
            object.__setattr__(self, "dedupe_key", key)  # frozen dataclass

    def as_dict(self) -> dict:
        """JSON-able payload (the discriminator is only part of the key, so it is left out)."""
        d = asdict(self)
        del d["discriminator"]
        return d


def post_webhook(
    url: str, payload: dict, timeout: float = 5.0, retries: int = 3, backoff: float = 0.5, sleep=time.sleep
) -> str:
    """POST ``payload`` as JSON to ``url``. Returns "delivered" on a 2xx answer, else "failed".

    429, 5xx, timeouts and connection errors are retried up to ``retries`` times (so at most
    ``retries + 1`` attempts), waiting ``backoff * 2**attempt`` seconds plus a little jitter (or the
    Retry-After seconds of a 429), capped at 30 s. Any other 4xx fails at once. Never raises.
    """
    try:
        body = json.dumps(payload).encode("utf-8")
    except (TypeError, ValueError):
        return "failed"
    for attempt in range(retries + 1):
        retry_after = None
        try:
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return "delivered"
                return "failed"  # e.g. an unfollowed 3xx: retrying will not help
        except urllib.error.HTTPError as e:  # a non-2xx answer
            if e.code == 429:
                retry_after = e.headers.get("Retry-After")
            elif e.code < 500:
                return "failed"
        except (urllib.error.URLError, HTTPException, OSError):  # connection error or timeout
            pass
        except Exception:  # e.g. ValueError for a malformed URL: retrying will not help
            return "failed"
        if attempt < retries:
            sleep(backoff_delay(attempt, backoff, MAX_DELAY_SECONDS, retry_after))
    return "failed"


# Kinds that describe the data of a day (not a failure of the run): not paged while backfilling.
HISTORY_KINDS = ("kpi_anomaly", "slo_breach")


def backfill_reason(day: date, now: datetime, after_days: float, backfill_run: bool = False) -> str | None:
    """Why an alert about `day` raised at `now` is not paged (None: it is). While backfilling
    history nobody can act on a KPI anomaly or SLO breach of a day long gone: a day that ended more
    than `after_days` days before the run, or any day of a run launched as a Dagster backfill, is
    history. The rows (kpi_anomalies, slo_status) are written all the same."""
    if backfill_run:
        return "backfill run"
    ended = datetime(day.year, day.month, day.day) + timedelta(days=1)
    if now - ended > timedelta(days=after_days):
        return f"history (the day ended more than {after_days:g} days before the run)"
    return None


def record(
    engine, alerts, webhook_url: str | None = None, timeout: float = 5.0, retries: int = 3,
    log=None, now=None, sleep=time.sleep, dry_run: bool = False,
) -> list[Alert]:
    """Store ``alerts`` in the catalog database (``engine``, table ``de_assets_alerts``) once per
    dedupe key; page only the new ones.

    A new key is inserted (first_seen = last_seen = ``now``, occurrences = 1), logged as
    ``"ALERT {json}"`` and POSTed to ``webhook_url`` when set; ``webhook_status`` is "delivered",
    "failed" or "not_configured" ("sending" while the POST runs). A known key (also a repeat within
    this call, or one another process inserted a moment before) only gets last_seen = ``now`` and
    occurrences + 1, with an info log line. Returns the new alerts.

    ``dry_run``: nothing reaches anyone and nothing is written: no row, no webhook, no
    ``ALERT {json}`` line for log-based alerting to pick up, only an info line saying what a real
    run would have raised (new: its key is not stored yet, nor earlier in this call).
    """
    log = log or DEFAULT_LOGGER
    now = now or utc_now()
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc).replace(tzinfo=None)
    table = ops_store.ALERTS
    new, seen = [], set()
    for alert in alerts:
        line = json.dumps(alert.as_dict(), sort_keys=True)
        if dry_run:
            with engine.connect() as c:
                known = c.execute(sa.select(table.c.dedupe_key).where(table.c.dedupe_key == alert.dedupe_key)).first()
            if known or alert.dedupe_key in seen:
                log.info(f"dry run: alert repeated (a real run would not page again): {alert.dedupe_key}")
            else:
                log.info(f"dry run, not paged: a real run would raise {line}")
                seen.add(alert.dedupe_key)
                new.append(alert)
            continue

        try:
            with engine.begin() as c:
                c.execute(sa.insert(table).values(
                    dedupe_key=alert.dedupe_key, severity=alert.severity, kind=alert.kind, asset=alert.asset,
                    partition=alert.partition, message=alert.message, run_id=alert.run_id, first_seen=now,
                    last_seen=now, occurrences=1, webhook_status="sending" if webhook_url else "not_configured",
                ))
        except IntegrityError:  # the key is known: a repeat (maybe raised by another run a moment ago)
            with engine.begin() as c:
                c.execute(sa.update(table).where(table.c.dedupe_key == alert.dedupe_key)
                          .values(last_seen=now, occurrences=table.c.occurrences + 1))
            log.info(f"alert repeated (not paged again): {alert.dedupe_key}")
            continue

        if alert.severity == "warning":
            log.warning("ALERT " + line)
        else:
            log.error("ALERT " + line)
        if webhook_url:
            payload = {**alert.as_dict(), "source": "de_assets"}
            status = post_webhook(webhook_url, payload, timeout=timeout, retries=retries, sleep=sleep)
            if status != "delivered":
                log.warning(f"alert webhook delivery failed: {alert.dedupe_key}")
            with engine.begin() as c:
                c.execute(sa.update(table).where(table.c.dedupe_key == alert.dedupe_key).values(webhook_status=status))
        new.append(alert)
    return new
