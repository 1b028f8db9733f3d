"""Naive pandas baseline: the same day -> aggregates work, the way a typical pandas script does it.

    python benchmarks/pandas_baseline.py <landing_root> <YYYY-MM-DD> <out.duckdb> [pseudonym_key]

* NDJSON (.gz): ``pd.read_json(lines=True)`` per file. One malformed line makes it reject the whole
  file (pandas has no ``on_bad_lines`` for JSON), so on ``ValueError`` the script falls back to
  ``json.loads`` line by line, skipping lines that do not parse.
* CSV: ``pd.read_csv(dtype=str)``, nested ``properties``/``context`` JSON text via ``json.loads`` in
  ``apply``. Parquet: read through DuckDB (``duckdb.read_parquet(...).df()``), because pandas needs
  pyarrow or fastparquet for Parquet and neither is a dependency of this project.
* HMAC pseudonyms per row with ``apply``, IP truncation per row, ``drop_duplicates`` on messageId
  (first delivery by receivedAt), the pipeline's acceptance rules as boolean masks, ``groupby`` for
  the aggregates. The aggregates are written to marts.* in a DuckDB file (for comparison only).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

EVENT_TYPES = ["track", "page", "screen", "identify", "group", "alias"]
FUNNEL = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"]
SESSION_GAP = pd.Timedelta(minutes=30)
IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")


# ---- reading ------------------------------------------------------------------------------------


def read_ndjson(path: Path) -> tuple[pd.DataFrame, bool]:
    """(frame, used_fallback)."""
    try:
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False, keep_default_dates=False), False
    except ValueError:
        opener = gzip.open if path.name.endswith(".gz") else open
        records = []
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return pd.DataFrame(records), True


def parse_json_text(value):
    if not isinstance(value, str):
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value  # not JSON: kept as text (rejected like the pipeline rejects it)


def read_folder(folder: Path, stats: dict) -> pd.DataFrame:
    frames = []
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if name.startswith((".", "_")):
            continue
        if name.endswith((".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")):
            df, fallback = read_ndjson(path)
            stats["ndjson_files"] = stats.get("ndjson_files", 0) + 1
            stats["ndjson_fallbacks"] = stats.get("ndjson_fallbacks", 0) + int(fallback)
        elif name.endswith(".csv"):
            df = pd.read_csv(path, dtype=str)
            for column in ("properties", "context", "traits"):
                if column in df.columns:
                    df[column] = df[column].apply(parse_json_text)
        elif name.endswith(".parquet"):
            df = duckdb.read_parquet(str(path)).df()
            for column in ("properties", "context", "traits"):
                if column in df.columns:
                    df[column] = df[column].apply(parse_json_text)
        else:
            raise ValueError(f"no reader for {path}")
        df["_file"] = path.name
        df["_line"] = np.arange(len(df))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


# ---- row-level helpers (applied per row) --------------------------------------------------------


def make_pseudonym(key: str):
    k = key.encode()

    def pseudonym(value):
        if not isinstance(value, str) or not value.strip():
            return None
        return hmac.new(k, value.strip().encode(), hashlib.sha256).hexdigest()[:32]

    return pseudonym


def truncate_ip(context):
    ip = context.get("ip") if isinstance(context, dict) else None
    if not isinstance(ip, str):
        return None
    ip = ip.strip()
    if IPV4.fullmatch(ip):
        return ip.rsplit(".", 1)[0] + ".0"
    if ":" in ip:
        return ":".join(ip.split(":")[:3]) + "::"
    return None


def revenue_text(properties):
    if not isinstance(properties, dict):
        return None
    value = properties.get("revenue")
    if value is None:
        value = properties.get("total")
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def properties_type(properties):
    if properties is None or (isinstance(properties, float) and np.isnan(properties)):
        return None
    return "OBJECT" if isinstance(properties, dict) else "OTHER"


def to_utc(series: pd.Series) -> pd.Series:
    text = series.where(series.map(type) == str)
    return pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601").dt.tz_localize(None)


# ---- events -------------------------------------------------------------------------------------


def clean_events(landing: Path, day: pd.Timestamp, key: str, stats: dict) -> pd.DataFrame:
    df = read_folder(landing / "events" / day.strftime("%Y-%m-%d"), stats)
    stats["events_read"] = len(df)
    df = df[df["messageId"].notna()].copy()
    df["received_ts"] = to_utc(df["receivedAt"])
    df = df.sort_values(["received_ts", "_file", "_line"], na_position="last", kind="stable")
    df = df.drop_duplicates("messageId", keep="first")

    pseudonym = make_pseudonym(key)
    df["user_id"] = df["userId"].apply(pseudonym)
    df["anonymous_id"] = df["anonymousId"].apply(pseudonym)
    df["user_key"] = df["user_id"].fillna(df["anonymous_id"])
    df["ip_prefix"] = df["context"].apply(truncate_ip)
    df["type"] = df["type"].str.strip().str.lower()
    df["event"] = df["event"].str.strip().replace("", None)
    df["properties_type"] = df["properties"].apply(properties_type)
    df["revenue_text"] = df["properties"].apply(revenue_text)
    df["revenue"] = pd.to_numeric(df["revenue_text"], errors="coerce")
    ts = to_utc(df["timestamp"])
    sent = to_utc(df["sentAt"])
    corrected = df["received_ts"] - (sent - ts)
    df["event_ts"] = corrected.where(sent.notna() & df["received_ts"].notna() & ts.notna(), ts)

    ok = (
        df["messageId"].astype(str).str.len().between(1, 256)
        & df["type"].isin(EVENT_TYPES)
        & ~((df["type"] == "track") & df["event"].isna())
        & df["user_key"].notna()
        & df["timestamp"].notna()
        & df["event_ts"].notna()
        & (df["event_ts"] >= pd.Timestamp("2000-01-01"))
        & (df["event_ts"] <= day + pd.Timedelta(days=2))
        & (df["properties_type"].isna() | (df["properties_type"] == "OBJECT"))
        & (df["revenue"].isna() | (df["revenue"] >= 0))
        & (df["revenue_text"].isna() | df["revenue"].notna())
    )
    clean = df[ok].copy()
    clean["event_date"] = clean["event_ts"].dt.normalize()
    return clean[["message_id" if "message_id" in clean else "messageId", "type", "event", "user_id",
                  "anonymous_id", "user_key", "ip_prefix", "event_ts", "event_date", "revenue"]]


def daily_engagement(ev: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    dau = ev.loc[ev["event_date"] == day, "user_key"].nunique()
    wau = ev.loc[ev["event_date"].between(day - pd.Timedelta(days=6), day), "user_key"].nunique()
    mau = ev.loc[ev["event_date"].between(day - pd.Timedelta(days=29), day), "user_key"].nunique()
    first_seen = ev.groupby("user_key")["event_date"].min()
    new_users = int((first_seen == day).sum())
    recent = ev[ev["event_date"].between(day - pd.Timedelta(days=1), day) & (ev["event_ts"] >= day - SESSION_GAP)]
    recent = recent.sort_values(["user_key", "event_ts"])
    gap = recent.groupby("user_key")["event_ts"].diff()
    today = recent["event_ts"].dt.normalize() == day
    sessions = int((today & (gap.isna() | (gap > SESSION_GAP))).sum())
    return pd.DataFrame([{
        "event_date": day.date(), "dau": dau, "wau": wau, "mau": mau, "stickiness": dau / mau if mau else None,
        "new_users": new_users, "returning_users": dau - new_users, "sessions": sessions,
        "events": int(today.sum()),
    }])


def funnel_daily(ev: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    steps = ev[(ev["event_date"] == day) & (ev["type"] == "track") & ev["event"].isin(FUNNEL)]
    reached = steps[steps["event"] == FUNNEL[0]].groupby("user_key")["event_ts"].min().rename("t").reset_index()
    users = [len(reached)]
    for step in FUNNEL[1:]:
        candidates = steps[steps["event"] == step].merge(reached, on="user_key")
        candidates = candidates[candidates["event_ts"] >= candidates["t"]]
        reached = candidates.groupby("user_key")["event_ts"].min().rename("t").reset_index()
        users.append(len(reached))
    rows = []
    for i, (step, n) in enumerate(zip(FUNNEL, users)):
        previous = 1.0 if n > 0 else None
        if i > 0:
            previous = n / users[i - 1] if users[i - 1] else None
        rows.append({"event_date": day.date(), "funnel": "checkout", "step_order": i + 1, "step": step,
                     "users": n, "conversion_from_previous": previous,
                     "conversion_from_start": n / users[0] if users[0] else None})
    return pd.DataFrame(rows)


def revenue_daily(ev: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    today = ev[ev["event_date"] == day]
    orders = today[(today["type"] == "track") & (today["event"] == "Order Completed")]
    revenue = float(orders["revenue"].sum())
    dau, paying = today["user_key"].nunique(), orders["user_key"].nunique()
    return pd.DataFrame([{
        "event_date": day.date(), "orders": len(orders), "revenue": revenue, "paying_users": paying,
        "arpu": revenue / dau if dau else None, "arppu": revenue / paying if paying else None,
    }])


def retention_cohorts(ev: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    week = day - pd.Timedelta(days=day.weekday())
    first = ev.groupby("user_key")["event_date"].min()
    cohort = (first - pd.to_timedelta(first.dt.weekday, unit="D")).rename("cohort_week")
    sizes = cohort.value_counts().rename("cohort_size")
    active = ev.loc[ev["event_date"].between(week, week + pd.Timedelta(days=6)), "user_key"].unique()
    retained = cohort[cohort.index.isin(active)].value_counts().rename("retained_users")
    out = pd.concat([sizes, retained], axis=1).fillna(0).reset_index().rename(columns={"index": "cohort_week"})
    out = out[out["cohort_week"] <= week]
    out["weeks_since"] = ((week - out["cohort_week"]).dt.days // 7).astype(int)
    out["retained_users"] = out["retained_users"].astype(int)
    out["retention_rate"] = out["retained_users"] / out["cohort_size"]
    out["activity_week"] = week.date()
    out["cohort_week"] = out["cohort_week"].dt.date
    return out[["cohort_week", "weeks_since", "cohort_size", "retained_users", "retention_rate", "activity_week"]]


# ---- requests -----------------------------------------------------------------------------------


def service_latency(landing: Path, day: pd.Timestamp, stats: dict) -> pd.DataFrame:
    df = read_folder(landing / "requests" / day.strftime("%Y-%m-%d"), stats)
    df = df.drop_duplicates(["timestamp", "service", "host", "endpoint", "status", "latency_ms"])
    epoch = pd.to_numeric(df["timestamp"].map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
    epoch = epoch.where(epoch <= 1e11, epoch / 1000)
    by_epoch = pd.to_datetime(epoch, unit="s", errors="coerce")
    df["request_ts"] = by_epoch.where(epoch.notna(), to_utc(df["timestamp"]))
    df["service"] = df["service"].str.strip().str.lower()
    for column in ("status", "latency_ms", "cpu_pct", "memory_mb"):
        df[column] = pd.to_numeric(df[column].map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
    ok = (
        df["request_ts"].notna() & (df["request_ts"] >= pd.Timestamp("2000-01-01"))
        & (df["request_ts"] <= day + pd.Timedelta(days=2))
        & df["service"].notna() & (df["service"].str.len() >= 1)
        & df["status"].between(100, 599) & (df["latency_ms"] >= 0)
        & (df["cpu_pct"].isna() | (df["cpu_pct"] >= 0)) & (df["memory_mb"].isna() | (df["memory_mb"] >= 0))
    )
    today = df[ok & (df["request_ts"].dt.normalize() == day)]
    grouped = today.groupby("service")
    out = pd.DataFrame({
        "requests": grouped.size(),
        "errors": grouped["status"].apply(lambda s: int((s >= 500).sum())),
        "p50_ms": grouped["latency_ms"].quantile(0.5),
        "p90_ms": grouped["latency_ms"].quantile(0.9),
        "p99_ms": grouped["latency_ms"].quantile(0.99),
    }).reset_index()
    out["error_rate"] = out["errors"] / out["requests"]
    out.insert(0, "event_date", day.date())
    return out[["event_date", "service", "requests", "errors", "error_rate", "p50_ms", "p90_ms", "p99_ms"]]


def run(landing_root: str | Path, day: str, database: str | Path, key: str) -> dict:
    landing, ts_day, stats = Path(landing_root), pd.Timestamp(day), {}
    events = clean_events(landing, ts_day, key, stats)
    marts = {
        "daily_engagement": daily_engagement(events, ts_day),
        "funnel_daily": funnel_daily(events, ts_day),
        "revenue_daily": revenue_daily(events, ts_day),
        "retention_cohorts": retention_cohorts(events, ts_day),
        "service_latency": service_latency(landing, ts_day, stats),
    }
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS marts")
        for name, frame in marts.items():
            con.register("_frame", frame)
            con.execute(f"CREATE OR REPLACE TABLE marts.{name} AS SELECT * FROM _frame")
            con.unregister("_frame")
    return {**stats, "events_clean": len(events)}


if __name__ == "__main__":
    print(run(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "bench"))
