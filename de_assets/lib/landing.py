"""The landing area: `<root>/<source>/<YYYY-MM-DD>/<name>.<ext>` (the day folder is the arrival day).

Every accepted format is turned into the same shape, one JSON document per record, so the raw
layer has exactly one parsing path: ``records_sql(path)`` returns a SQL query yielding
``(line_no, line)`` where ``line`` is the record as JSON text (or the unparseable text as landed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from de_assets.lib.sql import ident, literal

FORMATS = {
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".ndjson.gz": "ndjson.gz",
    ".jsonl.gz": "ndjson.gz",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}
# Columns that carry a nested JSON object when a record is flattened into CSV/Parquet.
JSON_COLUMNS = ("properties", "context", "traits", "integrations")


@dataclass(frozen=True)
class LandedFile:
    path: Path
    relative: str
    source: str
    arrival_date: date
    format: str | None  # None: unsupported extension

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size


def file_format(name: str) -> str | None:
    lowered = name.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if lowered.endswith(ext):
            return FORMATS[ext]
    return None


# Names that are not (yet) a landed file: hidden, and in-flight uploads that are renamed when complete.
IN_FLIGHT_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".inprogress", ".swp")


def _in_flight(name: str) -> bool:
    return name.startswith((".", "_")) or name.lower().endswith(IN_FLIGHT_SUFFIXES)


@dataclass(frozen=True)
class DayListing:
    """What is in a day folder: readable files, refused entries (with the reason) and skipped names."""

    files: list[LandedFile]
    refused: list[tuple[str, str]]  # (path relative to the root, reason)
    skipped: int  # hidden and in-flight temp files (picked up once renamed)


def scan_day(root: str | Path, source: str, day: date) -> DayListing:
    """Entries of ``<root>/<source>/<day>/`` in name order, confined to the landing root.

    Only regular files whose real path lies inside the landing root are readable: a link (or a
    linked folder) that resolves outside it is refused (``outside_landing_root``), and so is
    anything that is not a regular file (``not_a_regular_file``: folders, FIFOs, devices; a FIFO
    would block a reader). Hidden and in-flight names (``.x``, ``_x``, ``*.part``, ``*.tmp``) are
    skipped and counted.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"landing root {root.resolve()} does not exist (set DE_ASSETS_LANDING)")
    real_root = root.resolve()
    folder = root / source / day.isoformat()
    if not folder.is_dir():
        return DayListing([], [], 0)
    files, refused, skipped = [], [], 0
    for p in sorted(folder.iterdir()):
        relative = p.relative_to(root).as_posix()
        if _in_flight(p.name):
            skipped += 1
        elif not p.resolve().is_relative_to(real_root):
            refused.append((relative, "outside_landing_root"))
        elif not p.is_file():  # follows an inside link; a FIFO or a folder is not a file
            refused.append((relative, "not_a_regular_file"))
        else:
            files.append(LandedFile(p, relative, source, day, file_format(p.name)))
    return DayListing(files, refused, skipped)


def days_landed(root: str | Path, source: str, before: date) -> list[date]:
    """The arrival days of ``source`` that have a day folder, before ``before``, oldest first."""
    folder = Path(root) / source
    if not folder.is_dir():
        return []
    days = []
    for entry in folder.iterdir():
        try:
            day = date.fromisoformat(entry.name)
        except ValueError:
            continue
        if day < before and len(entry.name) == 10:
            days.append(day)
    return sorted(days)


class EarlierFiles:
    """Readable files landed for a source on days before a given day, found by size and checksum.

    Which delivery of a byte-identical file is the original depends only on the landing area
    (the earliest arrival day, then path), never on which day was ingested first: runs of
    different days may ingest in any order, or at once. Folders are listed once per instance
    (the days before ``until``, once per ingestion step) and a file is hashed only when its size
    matches.
    """

    def __init__(self, root: str | Path, source: str, until: date, known: dict[str, str] | None = None):
        self.root, self.source, self.until = root, source, until
        self._by_size: dict[int, list[LandedFile]] | None = None
        self._sha: dict[str, str] = dict(known or {})  # path -> sha256 already known (the registry)

    def _index(self) -> dict[int, list[LandedFile]]:
        if self._by_size is None:  # every day folder before `until`, listed once
            self._by_size = {}
            for day in days_landed(self.root, self.source, self.until):
                for f in list_files(self.root, self.source, day):
                    if f.format is not None:
                        self._by_size.setdefault(f.bytes, []).append(f)
        return self._by_size

    def first_with(self, checksum: str, size: int, before: date) -> LandedFile | None:
        """The earliest file (arrival day, then path) landed before ``before`` with these bytes."""
        if before > self.until:
            raise ValueError(f"files were listed before {self.until} only, not before {before}")
        for f in self._index().get(size, []):  # oldest first
            if f.arrival_date < before:
                if f.relative not in self._sha:
                    self._sha[f.relative] = sha256_of(f.path)
                if self._sha[f.relative] == checksum:
                    return f
        return None


def list_files(root: str | Path, source: str, day: date) -> list[LandedFile]:
    """Readable files that landed for ``source`` on ``day``, in name order (see ``scan_day``)."""
    return scan_day(root, source, day).files


def landed_since(root: str | Path, sources: tuple[str, ...], after_ns: int, seen_at: set[str]) -> list[tuple[LandedFile, int]]:
    """Files (any source, any day folder) modified at or after ``after_ns`` (ns since the epoch),
    except those in ``seen_at`` (already seen with exactly that mtime); with their mtime.

    Cheap on large trees: a day folder whose own mtime is older than ``after_ns`` received no new
    file since (adding a file updates the folder), so its files are not even listed. Writers should
    land files atomically (write ``.name`` or ``_name``, then rename): hidden names are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"landing root {root.resolve()} does not exist (set DE_ASSETS_LANDING)")
    found = []
    for source in sources:
        for folder in sorted((root / source).glob("????-??-??")):
            try:
                day = date.fromisoformat(folder.name)
            except ValueError:
                continue
            if not folder.is_dir() or folder.stat().st_mtime_ns < after_ns:
                continue
            for f in list_files(root, source, day):
                mtime = f.path.stat().st_mtime_ns
                if mtime > after_ns or (mtime == after_ns and f.relative not in seen_at):
                    found.append((f, mtime))
    return found


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _lines_sql(path: Path) -> str:
    # One VARCHAR column per physical line: no delimiter, no quoting; blank lines are skipped.
    return f"""
        SELECT row_number() OVER () AS line_no, line
        FROM read_csv({literal(path)}, columns = {{'line': 'VARCHAR'}}, header = false,
                      delim = '\\x1f', quote = '', escape = '', auto_detect = false,
                      strict_mode = false, null_padding = true, max_line_size = 16777216)
    """


def _json_array_sql(path: Path) -> str:
    # A valid array yields one record per element; anything else yields the text as one bad line.
    is_array = "CASE WHEN json_valid(content) THEN json_type(content::JSON) = 'ARRAY' ELSE false END"
    return f"""
        WITH doc AS (SELECT content, {is_array} AS is_array FROM read_text({literal(path)})),
        elements AS (SELECT unnest(json_extract(content::JSON, '$[*]'))::VARCHAR AS line FROM doc WHERE is_array)
        SELECT row_number() OVER () AS line_no, line FROM elements
        UNION ALL
        SELECT 1 AS line_no, content AS line FROM doc WHERE NOT is_array
    """


def _json_value_sql(column: str, column_type: str) -> str:
    col = ident(column)
    if column in JSON_COLUMNS and column_type == "VARCHAR":
        # JSON text in a column: keep it as an object when it parses, as text otherwise.
        return f"coalesce(try(json({col})), to_json({col}))"
    return col


def _nested_object_sql(tree: dict, types: dict[str, str]) -> str:
    parts = []
    for key, node in tree.items():
        if key == "":
            continue
        if isinstance(node, dict):
            value = _nested_object_sql(node, types)
            if "" in node:  # both `a` (JSON text) and `a.b` columns: the JSON text wins when present
                value = f"coalesce({_json_value_sql(node[''], types[node['']])}, {value})"
        else:
            value = _json_value_sql(node, types[node])
        parts.append(f"'{key.replace(chr(39), chr(39) * 2)}', {value}")
    return "json_object(" + ", ".join(parts) + ")"


def flattened_row_to_json_sql(columns: dict[str, str]) -> str:
    """SQL that rebuilds a nested record from flattened columns (`properties.revenue` -> nested)."""
    tree: dict = {}
    for name in columns:
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else {"": child}
            node = child
        if isinstance(node.get(leaf), dict):
            node[leaf][""] = name
        else:
            node[leaf] = name
    return _nested_object_sql(tree, columns)


def _table_sql(con, path: Path, fmt: str, parallel: bool = True) -> str:
    if fmt == "csv":
        scan = (
            f"read_csv({literal(path)}, header = true, all_varchar = true, quote = '\"', escape = '\"', "
            f"strict_mode = false, null_padding = true, parallel = {str(parallel).lower()})"
        )
    else:
        scan = f"read_parquet({literal(path)})"
    described = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
    columns = {row[0]: row[1] for row in described}
    return f"SELECT row_number() OVER () AS line_no, {flattened_row_to_json_sql(columns)}::VARCHAR AS line FROM {scan}"


def records_sql(con, landed: LandedFile, parallel: bool = True) -> str:
    """A query yielding ``(line_no, line)`` for every record of a landed file, any format.

    ``parallel = False`` reads a CSV with DuckDB's single-threaded reader, the only one that
    accepts quoted newlines together with rows of missing fields.
    """
    if landed.format in ("ndjson", "ndjson.gz"):
        # blank lines are not records (a regex test: trim() would copy every line)
        return f"SELECT * FROM ({_lines_sql(landed.path)}) WHERE line IS NOT NULL AND NOT regexp_full_match(line, '\\s*')"
    if landed.format == "json":
        return _json_array_sql(landed.path)
    if landed.format in ("csv", "parquet"):
        return _table_sql(con, landed.path, landed.format, parallel)
    raise ValueError(f"unsupported landing file format: {landed.relative}")
