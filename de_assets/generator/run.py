"""The driver: day by day, simulate the sessions, deliver the arriving events into files,
re-deliver a file now and then, write the request logs; then return the truth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from de_assets.generator.arrival import EventDelivery
from de_assets.generator.config import Dirt, ExperimentSpec, Formats
from de_assets.generator.files import FileWriter
from de_assets.generator.population import UserPool
from de_assets.generator.records import Records, hash64
from de_assets.generator.render import SqlVariables, events_sql, requests_sql
from de_assets.generator.requests import requests_day
from de_assets.generator.simulate import SessionSimulator
from de_assets.generator.truth import ExperimentTruth, events_day_summary, totals
from de_assets.generator.vocabulary import REQ_FILES
from de_assets.generator.window import STREAM_REDELIVERY_DAYS, STREAM_REDELIVERY_PICK, Window

# user traits the rendering queries read, looked up per event from the pool
_USER_TRAITS = ("a1", "a2", "plat", "ua", "ip", "loc", "first", "last", "dom", "num", "plan", "created")
# simulation-only columns the rendering queries do not read
_NOT_RENDERED = {"T", "late", "skew", "fmt", "file"}


class Generator:
    def __init__(self, root: Path, window: Window, events_per_day: int, requests_per_day: int, dirt: Dirt,
                 spec: ExperimentSpec, formats: Formats) -> None:
        self.root, self.window, self.dirt, self.spec, self.formats = root, window, dirt, spec, formats
        self.events_per_day, self.requests_per_day = events_per_day, requests_per_day
        self.progress: Callable[[date, dict[str, Any]], None] | None = None
        self.salts = window.salts()
        self.con = duckdb.connect(config={"memory_limit": "768MB", "threads": 1, "preserve_insertion_order": True})
        self.pool = UserPool(self.con, spec, window.start_ms, (self.salts[0], self.salts[1]))
        self.sessions = SessionSimulator(window, self.pool, spec, dirt, events_per_day)
        self.delivery = EventDelivery(window, dirt, formats)
        self.writer = FileWriter(root, window, self.con)
        self.experiment = ExperimentTruth(spec, self.pool)
        variables = SqlVariables()
        self.event_queries = events_sql(spec, variables)
        self.request_queries = {
            (style, kind): sql
            for _, _, style, _ in REQ_FILES
            for kind, sql in requests_sql(style, variables).items()
        }
        variables.install(self.con)
        self.per_day: dict[str, dict[str, Any]] = {}

    def run(self) -> dict[str, Any]:
        window = self.window
        redelivery_days = self._redelivery_days()
        try:
            for d in range(window.days):
                self.sessions.simulate_day(d)
                events = self._events_day(d)
                if d - 1 in redelivery_days:
                    self._redeliver(d - 1, events)
                requests = requests_day(window, self.dirt, self.writer, self.request_queries, d,
                                        self.requests_per_day)
                day = window.day(d).isoformat()
                self.per_day[day] = {"events": events, "requests": requests}
                if self.progress is not None:
                    self.progress(window.day(d), self.per_day[day])
        finally:
            self.con.close()
            self.writer.close()
        return self._summary()

    def _redelivery_days(self) -> set[int]:
        """Days one of whose NDJSON files is delivered again the next day (at least one)."""
        rng = self.window.rng(STREAM_REDELIVERY_DAYS)
        days = self.window.days
        if not (self.dirt.redelivered_file > 0 and days > 1):
            return set()
        chosen = {d for d in range(days - 1) if rng.random() < self.dirt.redelivered_file}
        return chosen or {int(rng.integers(0, days - 1))}

    def _events_day(self, d: int) -> dict[str, Any]:
        rec, n_ndjson = self.delivery.deliver(d, self.sessions.arriving.pop(d, []))
        entries = self._write_events(d, rec, n_ndjson) if rec else []
        return events_day_summary(self.window.day_ms(d), rec, [e["path"] for e in entries],
                                  sum(e["rows"] for e in entries), self.experiment)

    def _write_events(self, d: int, rec: Records, n_ndjson: int) -> list[dict[str, Any]]:
        """One file per file id: NDJSON parts (every second one gzipped), then CSV, Parquet, JSON."""
        day_iso = self.window.day(d).isoformat()
        users = rec["uidx"]
        cols = {"mid_a": hash64(rec["ev"], self.salts[2]), "mid_b": hash64(rec["ev"], self.salts[3])}
        cols.update({trait: self.pool[trait][users] for trait in _USER_TRAITS})
        cols.update({c: v for c, v in rec.items() if c not in _NOT_RENDERED})
        bounds = np.searchsorted(rec["file"], np.arange(n_ndjson + 4))
        parts = []
        for f in range(n_ndjson + 3):
            lo, hi = int(bounds[f]), int(bounds[f + 1])
            if hi <= lo:
                continue
            if f < n_ndjson:
                gz = self.formats.gzip and f % 2 == 1
                fmt, ext = "ndjson", "ndjson.gz" if gz else "ndjson"
            else:
                fmt = ext = ["csv", "parquet", "json"][f - n_ndjson]
                gz = False
            part_cols = {c: v[lo:hi] for c, v in cols.items()}
            part_cols["rn"] = np.arange(hi - lo, dtype=np.int64)  # the JSON array's brackets
            part_cols["nrows"] = np.full(hi - lo, hi - lo, np.int64)
            query = "flat" if fmt in ("csv", "parquet") else fmt
            parts.append((f"events-{day_iso}-part-{f:02d}.{ext}", fmt, "gzip" if gz else None, query, part_cols))
        return self.writer.write_parts("events", d, parts, self.event_queries)

    def _redeliver(self, d: int, summary_next: dict[str, Any]) -> None:
        copy = self.writer.redeliver(d, self.window.rng(STREAM_REDELIVERY_PICK, d))
        if copy is not None:
            summary_next["redelivered_files"].append(copy)
            summary_next["redelivered_rows"] += copy["rows"]

    def _summary(self) -> dict[str, Any]:
        window = self.window
        return {
            "landing_root": str(self.root),
            "seed": window.seed,
            "start_date": window.start.isoformat(),
            "days": window.days,
            "events_per_day": self.events_per_day,
            "requests_per_day": self.requests_per_day,
            "dirt": asdict(self.dirt),
            "formats": asdict(self.formats),
            "experiment": self.experiment.result(self.sessions.srm_dropped_sessions),
            "files": self.writer.files,
            "per_day": self.per_day,
            "totals": totals(self.per_day),
        }
