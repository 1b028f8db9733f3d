"""Staging: a day's landed files read into the temp table `_lines` (source_file, line_no, line, read_error),
which `lib/ingest.py` projects into the raw tables.

All files are read in one DuckDB scan when they can be; when that scan fails, each file is read on its own, and a
file DuckDB refuses whole is read record by record (`lib/salvage.py`): its readable records are kept, the rest are
staged with a `read_error`.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from de_assets.lib import landing, salvage
from de_assets.lib.sql import literal

# Files read by one statement: DuckDB plans a UNION ALL of n scans in time that grows faster than n
# (2,265 small files: 21 s in one statement, under a second in statements of 64).
SCAN_FILES = 64
_STAGE = "CREATE OR REPLACE TEMP TABLE _lines (source_file VARCHAR, line_no BIGINT, line VARCHAR, read_error VARCHAR)"


def _file_sql(con, landed: landing.LandedFile, parallel: bool = True) -> str:
    return (f"SELECT {literal(landed.relative)} AS source_file, line_no, line, NULL::VARCHAR AS read_error "
            f"FROM ({landing.records_sql(con, landed, parallel)})")


def stage(con, files: list[landing.LandedFile]) -> dict[str, str]:
    """Read the records of ``files`` into the temp table `_lines`; returns, per file that DuckDB
    could not read whole, the (data-free) description of the reader's error."""
    con.execute(_STAGE)
    if not files:
        return {}
    # Line numbers need each file read in order: insertion order on while staging.
    con.execute("SET preserve_insertion_order = true")
    try:
        try:
            for i in range(0, len(files), SCAN_FILES):
                con.execute("INSERT INTO _lines " + "\nUNION ALL\n".join(
                    _file_sql(con, f) for f in files[i:i + SCAN_FILES]))
            return {}
        except duckdb.Error:
            con.execute(_STAGE)  # some file cannot be read in one scan: read them one by one
        failures = {}
        for landed in files:
            try:
                con.execute("INSERT INTO _lines " + _file_sql(con, landed))
                continue
            except duckdb.Error as error:
                failures[landed.relative] = salvage.safe_error(error)
            _salvage(con, landed)
        return failures
    finally:
        con.execute("SET preserve_insertion_order = false")


def _salvage(con, landed: landing.LandedFile) -> None:
    """Stage what can be read of a file DuckDB refused whole (see `lib/salvage.py`)."""
    try:
        if landed.format == "csv":
            try:  # quoted newlines: DuckDB's single-threaded CSV reader accepts them
                con.execute("INSERT INTO _lines " + _file_sql(con, landed, parallel=False))
                return
            except duckdb.Error:
                _salvage_csv(con, landed)
                return
        data = landed.path.read_bytes()
        if landed.format in ("ndjson", "ndjson.gz"):
            records = list(salvage.ndjson_records(data, compressed=landed.format == "ndjson.gz"))
        elif landed.format == "json":
            records = list(salvage.json_array_records(data))
        else:
            records = [(0, None, "unreadable_file")]
    except Exception:  # noqa: BLE001 - whatever went wrong, the file is recorded, never lost
        records = [(0, None, "unreadable_file")]
    con.execute("DELETE FROM _lines WHERE source_file = ?", [landed.relative])
    _insert_records(con, landed.relative, records)


def _insert_records(con, relative: str, records: list) -> None:
    frame = pd.DataFrame(records, columns=["line_no", "line", "read_error"]).astype(
        {"line_no": "int64", "line": "object", "read_error": "object"})
    con.register("_salvaged", frame)
    try:
        con.execute("INSERT INTO _lines SELECT ?, line_no, line, read_error FROM _salvaged", [relative])
    finally:
        con.unregister("_salvaged")


def _salvage_csv(con, landed: landing.LandedFile) -> None:
    """Python's csv module: good records are turned into JSON by the same SQL as the fast path."""
    header, rows = salvage.csv_rows(landed.path.read_bytes())
    con.execute("DELETE FROM _lines WHERE source_file = ?", [landed.relative])
    names = [h if h and h not in header[:i] else f"column{i}" for i, h in enumerate(header)]
    good = [(n, *[v if v != "" else None for v in fields]) for n, fields, error in rows if error is None]
    if good:
        frame = pd.DataFrame(good, columns=["__line_no", *names], dtype="object")
        con.register("_salvaged", frame)
        try:
            as_json = landing.flattened_row_to_json_sql({n: "VARCHAR" for n in names})
            con.execute(f"INSERT INTO _lines SELECT ?, __line_no::BIGINT, {as_json}::VARCHAR, NULL FROM _salvaged",
                        [landed.relative])
        finally:
            con.unregister("_salvaged")
    bad = [(n, None, error) for n, _, error in rows if error is not None]
    if bad:
        _insert_records(con, landed.relative, bad)


def outcomes(con) -> dict[str, tuple[str, str | None, int, int]]:
    """Per staged file: (status, reason, rows, unreadable rows)."""
    out = {}
    for path, rows, unreadable, kinds in con.execute(
        "SELECT source_file, count(*), count(read_error), string_agg(DISTINCT read_error, ', ' ORDER BY read_error) "
        "FROM _lines GROUP BY 1"
    ).fetchall():
        if not unreadable:
            out[path] = ("ingested", None, rows, 0)
        elif unreadable == rows:
            out[path] = ("rejected", f"nothing readable: {kinds}", rows, unreadable)
        else:
            out[path] = ("partial", f"{unreadable} of {rows} records unreadable: {kinds}", rows, unreadable)
    return out
