"""Tests of the landing-data generator: layout, determinism, record shape, and that every kind of
injected dirt the summary claims is really in the files (and nothing else is)."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from de_assets.generator import (
    EVENT_TYPES,
    Dirt,
    ExperimentSpec,
    Formats,
    assign_variant,
    generate,
    variant_bucket,
)

START = date(2024, 3, 1)  # a Friday: the window covers a weekend
FLAT_COLUMNS = [
    "messageId",
    "type",
    "event",
    "userId",
    "anonymousId",
    "timestamp",
    "sentAt",
    "receivedAt",
    "originalTimestamp",
    "properties",
    "context",
    "traits",
]
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
IPV4 = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
NAME = re.compile(
    r"^(events|requests)-\d{4}-\d{2}-\d{2}-part-\d{2}(-redelivered)?\.(ndjson|ndjson\.gz|csv|parquet|json)$"
)
HEAVY_DIRT = Dirt(
    duplicate=0.05,
    duplicate_next_day=0.4,
    redelivered_file=1.0,
    late=0.05,
    clock_skew=0.05,
    malformed=0.02,
    missing_field=0.03,
    wrong_type=0.03,
    unknown_type=0.01,
    padded_enum=0.03,
    pii=0.03,
    requests_malformed=0.02,
    requests_missing_service=0.02,
    requests_bad_latency=0.02,
    requests_negative_latency=0.02,
    requests_duplicate=0.03,
)


# --------------------------------------------------------------------------------------------
# reading the landing zone back (independently of the generator)
# --------------------------------------------------------------------------------------------


def _ms(value: str) -> int:
    return int(datetime.fromisoformat(value).timestamp() * 1000)


def _day_start_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000)


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def _flat_rows(path: Path) -> list[dict]:
    reader = "read_csv" if path.suffix == ".csv" else "read_parquet"
    opts = ", all_varchar = true" if reader == "read_csv" else ""
    with duckdb.connect() as con:
        df = con.execute(f"SELECT * FROM {reader}(?{opts})", [str(path)]).df()
    rows = []
    for rec in df.to_dict("records"):
        rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
        for col in ("properties", "context", "traits"):
            if rec.get(col) is not None:
                rec[col] = json.loads(rec[col])
        rows.append(rec)
    return rows


def read_events_folder(folder: Path) -> dict:
    """All records of one arrival-day folder, in file/line order; malformed lines counted."""
    out = {"records": [], "malformed": 0, "rows": 0, "redelivered": []}
    for path in sorted(folder.iterdir()):
        if "-redelivered" in path.name:
            out["redelivered"].append(path)
            continue
        if path.name.endswith((".ndjson", ".ndjson.gz")):
            for line in _lines(path):
                out["rows"] += 1
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    out["malformed"] += 1
                    continue
                out["records"].append((path.name, rec))
        elif path.suffix == ".json":
            recs = json.loads(path.read_text())
            out["rows"] += len(recs)
            out["records"] += [(path.name, r) for r in recs]
        elif path.suffix in (".csv", ".parquet"):
            recs = _flat_rows(path)
            out["rows"] += len(recs)
            out["records"] += [(path.name, r) for r in recs]
        else:
            raise AssertionError(f"unexpected file {path}")
    return out


def classify(root: Path, summary: dict) -> dict[str, dict]:
    """Recompute, from the files alone, every count the summary claims per arrival day."""
    seen: set[str] = set()
    result = {}
    for day in summary["per_day"]:
        folder = read_events_folder(root / "events" / day)
        c: Counter = Counter()
        c["rows"] = folder["rows"]
        c["malformed"] = folder["malformed"]
        start = _day_start_ms(day)
        for _fname, r in folder["records"]:
            mid = r.get("messageId")
            if mid is not None and mid in seen:
                c["duplicates"] += 1
                continue
            if mid is not None:
                seen.add(mid)
            c["first_deliveries"] += 1
            typ = r.get("type")
            ts, sent, recv = r.get("timestamp"), r.get("sentAt"), r.get("receivedAt")
            props = r.get("properties")
            if mid is None:
                c["missing_message_id"] += 1
            if not r.get("userId") and not r.get("anonymousId"):
                c["missing_user"] += 1
            if ts is None:
                c["missing_timestamp"] += 1
            elif not isinstance(ts, str):
                c["wrong_type_timestamp"] += 1
            if isinstance(props, str):
                c["wrong_type_properties"] += 1
            if isinstance(props, dict) and "revenue" in props and not isinstance(props["revenue"], (int, float)):
                c["wrong_type_revenue"] += 1
            norm = typ.strip().lower()
            if norm not in EVENT_TYPES:
                c["unknown_type"] += 1
            elif typ != norm:
                c["padded_enum"] += 1
            if isinstance(props, dict):
                text = json.dumps(props)
                c["pii_email_in_properties"] += bool(EMAIL.search(text))
                c["pii_ip_in_properties"] += bool(IPV4.search(text))
            if isinstance(ts, str):
                corrected = _ms(recv) - (_ms(sent) - _ms(ts))
                c["late"] += corrected < start
                c["clock_skew"] += abs(_ms(recv) - _ms(sent)) > 60_000
        result[day] = c
    return result


# --------------------------------------------------------------------------------------------
# fixtures: one clean and one dirty landing zone shared by the module
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirty")
    summary = generate(root, START, days=5, events_per_day=1500, seed=3, dirt=HEAVY_DIRT, requests_per_day=800)
    return root, summary


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    exp = ExperimentSpec(crossover=0.0)
    summary = generate(root, START, days=4, events_per_day=2500, seed=5, dirt=Dirt.none(), experiment=exp)
    return root, summary


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# layout, determinism, formats
# --------------------------------------------------------------------------------------------


def test_layout_names_and_extensions(dirty):
    root, summary = dirty
    days = [(START + timedelta(days=i)).isoformat() for i in range(5)]
    assert sorted(p.name for p in root.iterdir()) == ["events", "requests"]
    for source in ("events", "requests"):
        assert sorted(p.name for p in (root / source).iterdir()) == days
    on_disk = _files(root)
    assert not [p for p in on_disk if Path(p).name.startswith(".")], "temp files left behind"
    for rel in on_disk:
        source, day, name = rel.split("/")
        assert NAME.match(name), name
        assert name.startswith(source)
        if "-redelivered" not in name:
            assert day in name  # the day folder is the arrival day of the (first) delivery
    # the summary's file list is exactly what is on disk, with the right sizes and checksums
    listed = {f["path"]: f for f in summary["files"]}
    assert set(listed) == set(on_disk)
    for rel, data in on_disk.items():
        assert listed[rel]["bytes"] == len(data)
        assert listed[rel]["sha256"] == hashlib.sha256(data).hexdigest()
    # every day has plain + gzipped NDJSON, one CSV and one parquet of events
    for day in days:
        names = [n for n in summary["per_day"][day]["events"]["files"]]
        exts = Counter(n.split(".", 1)[1] for n in names)
        assert exts["ndjson"] >= 1 and exts["ndjson.gz"] >= 1 and exts["csv"] == 1 and exts["parquet"] == 1
        assert {n.split(".", 1)[1] for n in summary["per_day"][day]["requests"]["files"]} == {
            "csv",
            "ndjson",
            "ndjson.gz",
        }
    gz = next(root.glob("events/*/*.ndjson.gz"))
    assert gz.read_bytes()[:2] == b"\x1f\x8b"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = dict(start_date=START, days=2, events_per_day=600, dirt=HEAVY_DIRT)
    s1 = generate(tmp_path / "a", seed=11, **kwargs)
    s2 = generate(tmp_path / "b", seed=11, **kwargs)
    generate(tmp_path / "c", seed=12, **kwargs)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    for s in (s1, s2):
        s.pop("landing_root")
    assert s1 == s2
    common = set(a) & set(c)
    assert common and all(a[p] != c[p] for p in common)


def test_csv_and_parquet_are_readable_with_expected_columns(dirty):
    root, summary = dirty
    with duckdb.connect() as con:
        for f in summary["files"]:
            if f["source"] != "events" or f["format"] not in ("csv", "parquet"):
                continue
            path = str(root / f["path"])
            reader = "read_csv" if f["format"] == "csv" else "read_parquet"
            rel = con.sql(f"SELECT * FROM {reader}('{path}')")
            assert rel.columns == FLAT_COLUMNS
            n, bad = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE NOT json_valid(context) "
                f"OR (properties IS NOT NULL AND NOT json_valid(properties))) FROM {reader}('{path}')"
            ).fetchone()
            assert n == f["rows"] and bad == 0
        # the pipeline-style scan of a whole day works too
        day = next(iter(summary["per_day"]))
        n = con.execute(f"SELECT count(*) FROM read_parquet('{root}/events/{day}/*.parquet')").fetchone()[0]
        assert n == sum(f["rows"] for f in summary["files"] if f["day"] == day and f["format"] == "parquet")


def test_format_shares_are_configurable(tmp_path):
    s = generate(
        tmp_path,
        START,
        days=1,
        events_per_day=2000,
        dirt=Dirt.none(),
        formats=Formats(csv=0.0, parquet=0.5, json=0.2, ndjson_files=3, gzip=False),
    )
    files = s["files"]
    ev = [f for f in files if f["source"] == "events"]
    assert not [f for f in ev if f["format"] == "csv" or f["compression"]]
    assert len([f for f in ev if f["format"] == "ndjson"]) == 3
    pq = sum(f["rows"] for f in ev if f["format"] == "parquet")
    assert 0.4 < pq / sum(f["rows"] for f in ev) < 0.6
    js = next(f for f in ev if f["format"] == "json")
    arr = json.loads((tmp_path / js["path"]).read_text())
    assert isinstance(arr, list) and len(arr) == js["rows"]


# --------------------------------------------------------------------------------------------
# record shape and realism (clean data)
# --------------------------------------------------------------------------------------------


def test_clean_records_parse_and_have_required_fields(clean):
    root, summary = clean
    for day in summary["per_day"]:
        folder = read_events_folder(root / "events" / day)
        assert folder["malformed"] == 0
        for fname, r in folder["records"]:
            assert r["messageId"] and r["type"] in EVENT_TYPES
            assert r.get("userId") or r.get("anonymousId")
            for key in ("timestamp", "sentAt", "receivedAt", "originalTimestamp"):
                assert ISO_MS.match(r[key]), (key, r[key])
            ts, sent, recv = _ms(r["timestamp"]), _ms(r["sentAt"]), _ms(r["receivedAt"])
            assert 0 <= sent - ts <= 2_000 and 0 <= recv - sent <= 1_000  # a second or two apart
            ctx = r["context"]
            assert IPV4.fullmatch(ctx["ip"]) and ctx["userAgent"] and ctx["library"]["name"]
            if ctx["library"]["name"] == "analytics.js":
                assert set(ctx["page"]) >= {"path", "url", "referrer"}
            if r["type"] == "identify":
                assert EMAIL.fullmatch(r["traits"]["email"]) and r["traits"]["name"] and r["traits"]["plan"]
                assert r["userId"]
            else:
                assert isinstance(r["properties"], dict)
            if r["type"] == "track":
                assert r["event"]
            if r["type"] == "page":
                assert r["properties"]["path"].startswith("/") and r["properties"]["url"].startswith("https://")
            if r.get("event") == "Order Completed":
                p = r["properties"]
                assert p["order_id"] and p["currency"] == "EUR" and p["total"] > 0
                assert "revenue" not in p or p["revenue"] > 0
            if fname.endswith((".ndjson", ".gz")):
                assert {"integrations", "channel", "version"} <= set(r)


def test_dirt_none_means_clean(clean):
    root, summary = clean
    counts = classify(root, summary)
    for day, c in counts.items():
        s = summary["per_day"][day]["events"]
        assert s["duplicates"] == s["invalid"] == 0 and s["redelivered_files"] == []
        assert all(v == 0 for k, v in s["dirt"].items()), s["dirt"]
        for kind in ("duplicates", "malformed", "missing_message_id", "missing_user", "missing_timestamp",
                     "wrong_type_timestamp", "wrong_type_properties", "wrong_type_revenue", "unknown_type",
                     "padded_enum", "pii_email_in_properties", "pii_ip_in_properties", "clock_skew"):
            assert c[kind] == 0, (day, kind)
        # nothing is injected late; only events from the last second before midnight may arrive after it
        assert c["late"] == s["late"] <= 3
        r = summary["per_day"][day]["requests"]
        assert all(v == 0 for v in r["dirt"].values())
    assert not list(root.glob("events/*/*redelivered*"))


def test_realistic_traffic_shape(clean):
    root, summary = clean
    days = summary["per_day"]
    # weekends (Sat 2, Sun 3 March) have ~30% fewer events
    assert days["2024-03-02"]["events"]["valid"] < 0.8 * days["2024-03-01"]["events"]["valid"]
    assert days["2024-03-03"]["events"]["valid"] < 0.8 * days["2024-03-04"]["events"]["valid"]
    recs = [r for d in days for _, r in read_events_folder(root / "events" / d)["records"]]
    anon = sum(r.get("userId") is None for r in recs) / len(recs)
    assert 0.15 < anon < 0.35
    ev = Counter(r.get("event") for r in recs)
    assert ev["Product Viewed"] > ev["Product Added"] > ev["Checkout Started"] > ev["Order Completed"] > 0
    assert ev["Signed Up"] > 0 and ev["Experiment Viewed"] > 0
    assert Counter(r["type"] for r in recs)["screen"] > 0
    orders = [r["properties"] for r in recs if r.get("event") == "Order Completed"]
    only_total = sum("revenue" not in p for p in orders) / len(orders)
    assert 0.03 < only_total < 0.2
    # new users every day, and users who come back on later days
    first_seen: dict[str, str] = {}
    active = defaultdict(set)
    for d in days:
        for _, r in read_events_folder(root / "events" / d)["records"]:
            u = r.get("userId") or r["anonymousId"]
            first_seen.setdefault(u, d)
            active[d].add(u)
    for d in list(days)[1:]:
        new = sum(first_seen[u] == d for u in active[d])
        assert 0 < new < len(active[d])
    # daytime busier than night
    hours = Counter(datetime.fromisoformat(r["timestamp"]).hour for r in recs)
    assert sum(hours[h] for h in range(12, 22)) > 3 * sum(hours[h] for h in range(0, 6))
    # sessions: within a user, consecutive events are seconds to minutes apart, sessions > 30 min apart
    by_user = defaultdict(list)
    for r in recs:
        by_user[r.get("userId") or r["anonymousId"]].append(_ms(r["timestamp"]))
    gaps = [b - a for t in by_user.values() for a, b in zip(sorted(t), sorted(t)[1:])]
    short = [g for g in gaps if g <= 30 * 60_000]
    assert sorted(short)[len(short) // 2] < 120_000
    assert any(g > 30 * 60_000 for g in gaps)


def test_funnel_is_in_time_order_within_a_session(clean):
    root, summary = clean
    day = next(iter(summary["per_day"]))
    recs = [r for _, r in read_events_folder(root / "events" / day)["records"]]
    by_order: dict[str, dict[str, int]] = defaultdict(dict)
    for r in recs:
        p = r.get("properties") or {}
        if r.get("event") in ("Checkout Started", "Order Completed"):
            by_order[p["order_id"]][r["event"]] = _ms(r["timestamp"])
    both = [o for o in by_order.values() if len(o) == 2]
    assert both and all(o["Checkout Started"] < o["Order Completed"] for o in both)


# --------------------------------------------------------------------------------------------
# dirt reconciliation: the summary is the truth
# --------------------------------------------------------------------------------------------


def test_event_dirt_counts_match_the_files(dirty):
    root, summary = dirty
    counts = classify(root, summary)
    totals: Counter = Counter()
    for day, c in counts.items():
        s = summary["per_day"][day]["events"]
        d = s["dirt"]
        assert c["rows"] == s["rows"]
        assert c["duplicates"] == s["duplicates"] == d["duplicates_same_day"] + d["duplicates_from_previous_day"]
        assert c["first_deliveries"] + c["malformed"] == s["first_deliveries"]
        assert s["rows"] == s["valid"] + s["invalid"] + s["duplicates"]
        assert c["late"] == s["late"]
        assert d["late_injected"] <= s["late"]
        for kind in ("malformed", "missing_message_id", "missing_user", "missing_timestamp",
                     "wrong_type_timestamp", "wrong_type_properties", "wrong_type_revenue", "unknown_type",
                     "padded_enum", "pii_email_in_properties", "pii_ip_in_properties", "clock_skew"):
            assert c[kind] == d[kind], (day, kind, c[kind], d[kind])
        invalid = sum(d[k] for k in ("malformed", "missing_message_id", "missing_user", "missing_timestamp",
                                     "wrong_type_timestamp", "wrong_type_properties", "wrong_type_revenue",
                                     "unknown_type"))
        assert invalid == s["invalid"]
        totals.update(c)
    # at these rates every kind of dirt actually shows up somewhere
    for kind in ("duplicates", "late", "malformed", "missing_message_id", "missing_user", "missing_timestamp",
                 "wrong_type_timestamp", "wrong_type_properties", "unknown_type", "padded_enum",
                 "pii_email_in_properties", "pii_ip_in_properties", "clock_skew"):
        assert totals[kind] > 0, kind
    assert summary["totals"]["events"]["dirt"]["duplicates_from_previous_day"] > 0


def test_late_events_are_one_to_five_days_late(dirty):
    root, summary = dirty
    n_late, seen = 0, set()
    for day in summary["per_day"]:
        start = _day_start_ms(day)
        for _, r in read_events_folder(root / "events" / day)["records"]:
            mid = r.get("messageId")
            if mid in seen:
                continue  # a re-delivered copy keeps its original event time
            seen.add(mid)
            if isinstance(r.get("timestamp"), str):
                corrected = _ms(r["receivedAt"]) - (_ms(r["sentAt"]) - _ms(r["timestamp"]))
                if corrected < start - 5_000:  # more than "sent just before midnight"
                    n_late += 1
                    assert start - 5 * 86_400_000 <= corrected  # never more than 5 days
                    assert start <= _ms(r["receivedAt"]) < start + 86_400_000  # arrival day = folder
    assert n_late == summary["totals"]["events"]["dirt"]["late_injected"] > 0


def test_clock_skew_is_recoverable(dirty):
    root, summary = dirty
    skewed, seen = 0, set()
    for day in summary["per_day"]:
        for _, r in read_events_folder(root / "events" / day)["records"]:
            if not isinstance(r.get("timestamp"), str) or r.get("messageId") in seen:
                continue  # (a retried copy was sent later: compare the first delivery)
            seen.add(r.get("messageId"))
            ts, sent, recv = _ms(r["timestamp"]), _ms(r["sentAt"]), _ms(r["receivedAt"])
            if abs(recv - sent) > 60_000:
                skewed += 1
                assert abs(recv - ts) >= 60_000  # device time is off by minutes to hours ...
                assert abs((recv - (sent - ts)) - recv) < 5_000  # ... the corrected time is right
    assert skewed > 0


def test_redelivered_file_is_byte_identical(dirty):
    root, summary = dirty
    redelivered = [r for d in summary["per_day"].values() for r in d["events"]["redelivered_files"]]
    assert len(redelivered) >= 1
    for r in redelivered:
        copy, original = root / r["path"], root / r["original"]
        assert copy.name != original.name
        assert copy.read_bytes() == original.read_bytes()
        day_copy, day_orig = date.fromisoformat(copy.parent.name), date.fromisoformat(original.parent.name)
        assert day_copy == day_orig + timedelta(days=1)
        assert r["rows"] == len(_lines(copy))
    files = {f["path"]: f for f in summary["files"]}
    assert all(files[r["path"]]["sha256"] == files[r["original"]]["sha256"] for r in redelivered)


def test_at_least_one_redelivered_file_even_at_a_low_rate(tmp_path):
    s = generate(tmp_path, START, days=2, events_per_day=300, dirt=replace(Dirt.none(), redelivered_file=0.01))
    assert len(s["per_day"]["2024-03-02"]["events"]["redelivered_files"]) == 1


def test_request_dirt_counts_match_the_files(dirty):
    root, summary = dirty
    seen_formats = set()
    for day, per in summary["per_day"].items():
        s = per["requests"]
        c: Counter = Counter()
        rows: list[dict] = []
        for path in sorted((root / "requests" / day).iterdir()):
            if path.suffix == ".csv":
                with duckdb.connect() as con:
                    df = con.execute("SELECT * FROM read_csv(?, all_varchar = true)", [str(path)]).df()
                assert list(df.columns) == ["timestamp", "service", "method", "endpoint", "host", "status",
                                            "latency_ms", "cpu_pct", "memory_mb"]
                recs = [{k: v for k, v in r.items() if isinstance(v, str)} for r in df.to_dict("records")]
                lines = [tuple(sorted(r.items())) for r in recs]
            else:
                lines, recs = [], []
                for line in _lines(path):
                    lines.append(line)
                    try:
                        recs.append(json.loads(line))
                    except json.JSONDecodeError:
                        c["malformed"] += 1
            c["rows"] += len(lines)
            c["duplicates"] += sum(n - 1 for n in Counter(lines).values())
            for r in recs:
                ts = r["timestamp"]
                seen_formats.add("iso" if isinstance(ts, str) and "T" in ts else
                                 "ms" if isinstance(ts, int) else "s")
            rows += recs
        # per-row dirt, counted over distinct rows (duplicates are exact copies of clean rows)
        distinct = {json.dumps(r, sort_keys=True): r for r in rows}.values()
        for r in distinct:
            if not r.get("service"):
                c["missing_service"] += 1
            lat = r["latency_ms"]
            try:
                lat = float(lat)
            except ValueError:
                c["latency_non_numeric"] += 1
                continue
            c["latency_negative"] += lat < 0
        assert c["rows"] == s["rows"]
        for kind in ("malformed", "missing_service", "latency_non_numeric", "latency_negative", "duplicates"):
            assert c[kind] == s["dirt"][kind], (day, kind)
    assert seen_formats == {"iso", "ms", "s"}
    assert all(summary["totals"]["requests"]["dirt"][k] > 0 for k in summary["totals"]["requests"]["dirt"])


def test_requests_look_like_operations_data(clean):
    root, _ = clean
    with duckdb.connect() as con:
        df = con.execute(
            f"""SELECT service, count(*) AS n, avg((status >= 500)::INT) AS err,
                       quantile_cont(latency_ms, 0.5) AS p50, quantile_cont(latency_ms, 0.99) AS p99,
                       max(latency_ms) AS max
                FROM (SELECT service, status, latency_ms FROM read_csv('{root}/requests/*/*.csv')
                      UNION ALL
                      SELECT service, status, latency_ms FROM read_json('{root}/requests/*/*.ndjson*'))
                GROUP BY service ORDER BY service"""
        ).df().set_index("service")
    assert set(df.index) == {"auth", "catalog", "checkout", "search"}
    overall = (df["err"] * df["n"]).sum() / df["n"].sum()
    assert 0.005 < overall < 0.03
    assert df["err"].idxmax() == "checkout"
    assert df.loc["checkout", "p50"] > df.loc["auth", "p50"]
    assert (df["p99"] > 2 * df["p50"]).all() and (df["max"] > 10 * df["p50"]).all()  # long tail


# --------------------------------------------------------------------------------------------
# experiment
# --------------------------------------------------------------------------------------------


def test_assign_variant_is_deterministic_and_balanced():
    keys = [f"cus_{i}" for i in range(20_000)]
    first = [assign_variant(k) for k in keys]
    assert first == [assign_variant(k) for k in keys]
    share = Counter(first)["treatment"] / len(keys)
    assert 0.48 < share < 0.52
    skewed = ExperimentSpec(experiment_id="x", variants=("a", "b", "c"), weights=(0.8, 0.1, 0.1))
    share_a = Counter(assign_variant(k, skewed) for k in keys)["a"] / len(keys)
    assert 0.78 < share_a < 0.82
    assert 0 <= variant_bucket("cus_1", "x") < 1
    # assignment depends on the experiment too
    other = ExperimentSpec(experiment_id="another-test")
    assert sum(assign_variant(k) != assign_variant(k, other) for k in keys[:2000]) > 500


def test_exposures_follow_the_assignment(clean):
    root, summary = clean
    spec = ExperimentSpec(crossover=0.0)
    arms: dict[str, set] = defaultdict(set)
    for day in summary["per_day"]:
        for _, r in read_events_folder(root / "events" / day)["records"]:
            if r.get("event") == "Experiment Viewed":
                key = r.get("userId") or r["anonymousId"]
                p = r["properties"]
                assert p["experiment_id"] == "checkout-button-color"
                assert p["variant_id"] == assign_variant(key, spec)
                arms[p["variant_id"]].add(key)
    n_c, n_t = len(arms["control"]), len(arms["treatment"])
    assert n_c + n_t > 200
    assert abs(n_t / (n_c + n_t) - 0.5) < 0.1
    truth = summary["experiment"]
    assert truth["exposed_users"] == {"control": n_c, "treatment": n_t}
    assert truth["crossover_users"] == 0


def test_srm_crossover_and_effect_are_injected(tmp_path):
    spec = ExperimentSpec(true_effect=1.0, srm=0.4, crossover=0.05)
    s = generate(tmp_path, START, days=3, events_per_day=10_000, seed=9, dirt=Dirt.none(), experiment=spec)
    truth = s["experiment"]
    users = truth["exposed_users"]
    assert users["treatment"] < 0.85 * users["control"]  # sample-ratio mismatch
    rate = {v: truth["converted_users"][v] / users[v] for v in users}
    assert rate["treatment"] > 1.2 * rate["control"]  # the true effect shows
    both = defaultdict(set)
    for day in s["per_day"]:
        for _, r in read_events_folder(tmp_path / "events" / day)["records"]:
            if r.get("event") == "Experiment Viewed":
                both[r.get("userId") or r["anonymousId"]].add(r["properties"]["variant_id"])
    crossover = sum(len(v) > 1 for v in both.values())
    assert crossover == truth["crossover_users"] > 0
    assert crossover / len(both) < 0.1


def test_invalid_configuration_is_rejected():
    with pytest.raises(ValueError):
        ExperimentSpec(variants=("a",), weights=(1.0,))
    with pytest.raises(ValueError):
        Formats(csv=0.7, parquet=0.5)
    with pytest.raises(ValueError):
        Dirt(duplicate=1.5)
    with pytest.raises(ValueError):
        Dirt(malformed=0.6, missing_field=0.6)
