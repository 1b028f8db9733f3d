"""Where raw rows are stored: a feature flag, `raw_format`, per arrival day.

* ``json``    (default) rows go to the DuckDB table (`raw.events`, `raw.requests`); the nested
              payloads (`properties`, `context`, `extra`) are JSON text columns.
* ``parquet`` rows of a day's ingest batch are written to one zstd Parquet file per batch under
              ``<raw_dir>/<source>/<arrival day>/<batch>.parquet`` and registered in
              `raw.parquet_batches`; the DuckDB file keeps only the registry.

Readers never care: `relation(con, table, start, end)` is a SQL relation over both stores for an
arrival-day range (only the Parquet files of those days are opened). Both formats hold exactly the
same rows and columns, so every table downstream is identical whichever format a day used; the
pipeline-configuration experiment (`pipeline_health/config_experiments`) checks that.

Rollout: `applies(flag, day, fraction)` picks a deterministic subset of days (hash of flag and day),
so a new format can be tried on, say, 10% of partitions first.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

from de_assets.lib.tables import PARQUET_BATCHES, Table
from de_assets.lib.sql import literal

FORMATS = ("json", "parquet")


def applies(flag: str, day: date, fraction: float) -> bool:
    """Whether a flag rolled out to `fraction` of partitions applies to `day` (stable across runs)."""
    if fraction >= 1:
        return True
    if fraction <= 0:
        return False
    bucket = int(hashlib.sha256(f"{flag}:{day.isoformat()}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def parquet_files(con, table: Table, start: date | None = None, end: date | None = None) -> list[str]:
    """Registered Parquet batch files of the table, for arrival days in [start, end] (None: open)."""
    sql = f"SELECT path FROM {PARQUET_BATCHES.name} WHERE table_name = ?"
    params: list = [table.name]
    if start is not None:
        sql += " AND arrival_date >= ?"
        params.append(start)
    if end is not None:
        sql += " AND arrival_date <= ?"
        params.append(end)
    return [p for (p,) in con.execute(sql + " ORDER BY arrival_date, path", params).fetchall()]


def relation(con, table: Table, start: date | None = None, end: date | None = None) -> str:
    """A FROM-able SQL relation over the table's rows in both stores (Parquet files of [start, end] only)."""
    files = parquet_files(con, table, start, end)
    if not files:
        return table.name
    columns = ", ".join(f'"{c}"' for c in table.column_names)
    file_list = "[" + ", ".join(literal(f) for f in files) + "]"
    return (f"(SELECT {columns} FROM {table.name} UNION ALL "
            f"SELECT {columns} FROM read_parquet({file_list}))")


def write_parquet_batch(con, table: Table, staged: str, day: date, raw_dir: str, batch: str) -> int:
    """Write the staged rows (a temp table with the table's columns) as one Parquet file; register it."""
    target = Path(raw_dir) / table.name.split(".")[1] / day.isoformat() / f"{batch}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    columns = ", ".join(f'"{c}"' for c in table.column_names)
    con.execute(f"COPY (SELECT {columns} FROM {staged}) TO {literal(target)} (FORMAT parquet, COMPRESSION zstd)")
    [(rows,)] = con.execute(f"SELECT count(*) FROM {staged}").fetchall()
    con.execute(
        f"INSERT INTO {PARQUET_BATCHES.name} VALUES (?, ?, ?, ?, ?)",
        [table.name, day, str(target.resolve()), rows, target.stat().st_size],
    )
    return rows


def forget(con, table: Table, start: date, end: date, delete_files: bool = True) -> None:
    """Drop the range's Parquet batches from the registry (and from disk unless `delete_files` is off)."""
    for path in parquet_files(con, table, start, end):
        if delete_files:
            Path(path).unlink(missing_ok=True)
    con.execute(
        f"DELETE FROM {PARQUET_BATCHES.name} WHERE table_name = ? AND arrival_date BETWEEN ? AND ?",
        [table.name, start, end],
    )

