"""Writing the landing files: DuckDB ``COPY`` of a rendering query to a hidden temp name, gzip in a
worker thread, atomic rename; the catalogue of every file written (size, sha256); and the
byte-identical re-delivery of a file into the next day's folder."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from de_assets.generator.records import Records
from de_assets.generator.render import LINES_COPY_OPTS
from de_assets.lib.sql import literal
from de_assets.generator.window import Window

COPY_OPTIONS = {
    "lines": LINES_COPY_OPTS,
    "lines_gz": LINES_COPY_OPTS,
    "csv": "(FORMAT csv, HEADER true)",
    "parquet": "(FORMAT parquet)",
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _finish_file(written: Path, tmp: Path, final: Path, gz: bool) -> tuple[int, str]:
    """Gzip (deterministically: no name, mtime 0) if asked, move into place, return size + sha256."""
    if gz:
        with open(written, "rb") as fi, open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as fo:
                shutil.copyfileobj(fi, fo, 1 << 22)
        written.unlink()
    os.replace(tmp, final)
    return final.stat().st_size, sha256_of(final)


class FileWriter:
    """Writes the files under ``root`` and lists each in ``files`` (the summary's catalogue)."""

    def __init__(self, root: Path, window: Window, con: duckdb.DuckDBPyConnection) -> None:
        self.root, self.window, self.con = root, window, con
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gen-finish")
        self.files: list[dict[str, Any]] = []

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    def folder(self, source: str, d: int) -> Path:
        folder = self.root / source / self.window.day(d).isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def copy_to(self, df: pd.DataFrame, query: str, path: Path, mode: str) -> Future:
        """COPY ``query`` over ``df`` (as table ``src``) to ``path``; returns a future of
        (bytes, sha256). Files appear atomically (hidden temp name, then rename); gzip runs in a
        worker thread (zlib releases the GIL) while DuckDB writes the next file. ``mode`` is
        lines | lines_gz | csv | parquet."""
        tmp = path.with_name(f".{path.name}.tmp")
        target = path.with_name(f".{path.name}.plain.tmp") if mode == "lines_gz" else tmp
        self.con.register("src", df)
        try:
            self.con.execute(f"COPY ({query}) TO {literal(target)} {COPY_OPTIONS[mode]}")
        finally:
            self.con.unregister("src")
        return self.executor.submit(_finish_file, target, tmp, path, mode == "lines_gz")

    def write_parts(self, source: str, d: int, parts: list[tuple[str, str, str | None, Any, Records]],
                    queries: dict[Any, str]) -> list[dict[str, Any]]:
        """Write each part ``(file name, format, compression, query key, columns)`` with
        ``queries[query key]``; returns their catalogue entries once all are finished."""
        folder = self.folder(source, d)
        pending = []
        for name, fmt, compression, query_key, cols in parts:
            rows = len(next(iter(cols.values())))
            df = pd.DataFrame(cols)
            if fmt in ("ndjson", "json"):
                mode = "lines_gz" if compression == "gzip" else "lines"
            else:
                mode = fmt
            path = folder / name
            pending.append((path, fmt, compression, rows, self.copy_to(df, queries[query_key], path, mode)))
            del df
        return [self.add_entry(source, d, path, fmt, compression, rows, future=future)
                for path, fmt, compression, rows, future in pending]

    def add_entry(self, source: str, d: int, path: Path, fmt: str, compression: str | None, rows: int,
                  redelivery_of: str | None = None, future: Future | None = None) -> dict[str, Any]:
        size, digest = future.result() if future is not None else (path.stat().st_size, sha256_of(path))
        entry = {
            "source": source,
            "day": self.window.day(d).isoformat(),
            "path": path.relative_to(self.root).as_posix(),
            "format": fmt,
            "compression": compression,
            "rows": int(rows),
            "bytes": size,
            "sha256": digest,
            "redelivery_of": redelivery_of,
        }
        self.files.append(entry)
        return entry

    def redeliver(self, d: int, pick_rng: np.random.Generator) -> dict[str, Any] | None:
        """Copy one NDJSON events file of day d byte-identically into day d+1's folder (another
        name); returns ``{path, original, rows, sha256}`` or None when day d has no NDJSON file."""
        day = self.window.day(d).isoformat()
        candidates = [f for f in self.files if f["source"] == "events" and f["day"] == day
                      and f["format"] == "ndjson" and f["redelivery_of"] is None]
        if not candidates:
            return None
        pick = candidates[int(pick_rng.integers(0, len(candidates)))]
        src = self.root / pick["path"]
        dst = self.folder("events", d + 1) / src.name.replace(".ndjson", "-redelivered.ndjson")
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        entry = self.add_entry("events", d + 1, dst, "ndjson", pick["compression"], pick["rows"], pick["path"])
        return {"path": entry["path"], "original": pick["path"], "rows": pick["rows"], "sha256": entry["sha256"]}
