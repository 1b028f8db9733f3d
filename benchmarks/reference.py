"""Run benchmarks/reference.sql for one landed day: the hand-written DuckDB baseline.

    python benchmarks/reference.py <landing_root> <YYYY-MM-DD> <out.duckdb> [pseudonym_key]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
SQL = HERE / "reference.sql"
PRIVACY = HERE.parent / "de_assets" / "lib" / "privacy.py"


def privacy_module():
    """de_assets.lib.privacy loaded from its file: the same macros, without importing the
    `de_assets` package (whose __init__ imports Dagster, which the baseline must not pay for)."""
    spec = importlib.util.spec_from_file_location("_bench_privacy", PRIVACY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(folder: Path) -> dict[str, list[str]]:
    """Every file of a landing day folder by reader; anything the script cannot read is an error
    (the reference must read every file, like the pipeline)."""
    groups: dict[str, list[str]] = {"ndjson": [], "csv": [], "parquet": []}
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if path.name.startswith((".", "_")) or not path.is_file():
            continue
        if name.endswith((".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")):
            groups["ndjson"].append(str(path))
        elif name.endswith(".csv"):
            groups["csv"].append(str(path))
        elif name.endswith(".parquet"):
            groups["parquet"].append(str(path))
        else:
            raise ValueError(f"reference.sql has no reader for {path}")
    return groups


def _list(paths: list[str], what: str) -> str:
    if not paths:
        raise ValueError(f"reference.sql expects at least one {what} file (the generator always writes one)")
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def script(landing_root: str | Path, day: str) -> str:
    root = Path(landing_root)
    events, requests = _files(root / "events" / day), _files(root / "requests" / day)
    if requests["parquet"]:
        raise ValueError("reference.sql does not read Parquet request logs")
    replacements = {
        "@EVENTS_NDJSON@": _list(events["ndjson"], "events NDJSON"),
        "@EVENTS_CSV@": _list(events["csv"], "events CSV"),
        "@EVENTS_PARQUET@": _list(events["parquet"], "events Parquet"),
        "@REQUESTS_NDJSON@": _list(requests["ndjson"], "requests NDJSON"),
        "@REQUESTS_CSV@": _list(requests["csv"], "requests CSV"),
        "@DAY@": f"DATE '{day}'",
    }
    text = SQL.read_text()
    for token, value in replacements.items():
        text = text.replace(token, value)
    return text


def run(landing_root: str | Path, day: str, database: str | Path, key: str) -> dict:
    con = duckdb.connect(str(database))
    try:
        privacy_module().install_macros(con, key)
        con.execute(script(landing_root, day))
        counts = con.execute(
            "SELECT (SELECT count(*) FROM landed_events), (SELECT count(*) FROM clean_events), "
            "(SELECT count(*) FROM clean_requests)"
        ).fetchone()
    finally:
        con.close()
    return {"events_parsed": counts[0], "events_clean": counts[1], "requests_clean": counts[2]}


if __name__ == "__main__":
    print(run(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "bench"))
