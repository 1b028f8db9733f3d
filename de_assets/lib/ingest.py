"""The raw layer: landed files -> `raw.events` / `raw.requests`, pseudonymized at the door.

Rules:
* Every landed file is registered in `raw.source_files` with its sha256, size, format and rows.
* A file whose checksum was ingested before (under any name, any day) is a re-delivery: it is
  registered with ``status = 'redelivered'`` and its rows are not ingested again.
* The raw layer is append-only: a file already registered is never read twice, so re-running a
  partition ingests only files that are new since the last run.
* A bad file costs only itself: what can be read of it is kept, the rest is a raw row with a
  `parse_error` (quarantined downstream); the file is registered as `partial` or `rejected`.
* Only regular files inside the landing root are read (`landing.scan_day`); anything else is
  registered as `refused` with the reason.
* New files are ingested in one transaction together with their registry rows: a range run
  reads the new files of several days at once (`ingest_days`, batches of up to `BATCH_BYTES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import duckdb

from de_assets.lib import forget, landing, salvage, staging
from de_assets.lib.days import days_between, utc_now
from de_assets.lib.sql import insert_rows, literal, transaction
from de_assets.lib.tables import RAW_EVENTS, RAW_REQUESTS, SOURCE_FILES

_EVENT_FIELDS = ("messageId", "type", "event", "userId", "anonymousId", "timestamp", "sentAt",
                 "receivedAt", "originalTimestamp", "properties", "context")
_EVENT_SHAPE = "{" + ", ".join(
    f'"{f}": "{"JSON" if f in ("properties", "context") else "VARCHAR"}"' for f in _EVENT_FIELDS
) + "}"
_EXTRA_PATCH = "{" + ",".join(f'"{f}":null' for f in _EVENT_FIELDS) + "}"
# Identifier fields whose value is redacted from the text of a line that could not be parsed: the
# value may be quoted, cut off, or a bare number (`"userId": 4821`).
_ID_FIELDS_RE = (
    r'("(userId|anonymousId|user_id|anonymous_id|previousId|groupId)"\s*:\s*)'
    r'("[^"]*"?|[^,}\]\s]+)'
)
# What is kept of a line that could not be parsed: scrubbed, identifiers redacted.
_UNPARSED_TEXT = f"scrub(regexp_replace(line, '{_ID_FIELDS_RE}', '\\1\"[redacted]\"', 'g'))"

# One JSON parse per line into a struct `r`; `ok` is false when the line was unreadable (a
# `read_error` from `lib/salvage.py`) or is not a JSON object.
# Expensive intermediates are computed in their own SELECT level and CASE is applied on top: DuckDB
# re-evaluates repeated (macro) sub-expressions inside CASE branches, which cost 3-4x here.
_PARSED = """
    SELECT arrival_date, source_file, line_no, line, read_error, ok,
           CASE WHEN ok THEN from_json(line, '{shape}') END AS r
    FROM (SELECT *, coalesce(read_error IS NULL AND json_valid(line) AND regexp_matches(line, '^\\s*\\{{'), false)
                    AS ok
          FROM ({{records}}))
"""
_PARSE_ERROR = "CASE WHEN read_error IS NOT NULL THEN read_error WHEN NOT ok THEN 'malformed_json' END"

# `extra` costs a second parse of the line (`json_merge_patch`), about a fifth of the projection.
# Measured without it (issue 13; 300k generated lines, one thread, the whole projection): a
# MAP(VARCHAR, JSON) parse instead of the struct costs more than both parses (2.2 s against 0.9 s
# for the struct alone), and `json_keys` + the struct parse with Segment's other fields + writing
# `extra` from them cost as much as the merge patch (4.7 s against 4.5 s for the projection).
RAW_EVENTS_SELECT = f"""
    WITH parsed AS ({_PARSED.format(shape=_EVENT_SHAPE)}),
    with_ip AS (SELECT *, r.context->>'$.ip' AS ip,
                       CASE WHEN ok THEN json_merge_patch(line, '{_EXTRA_PATCH}') END AS extra_base FROM parsed),
    patched AS (
        SELECT *,
            -- context.ip -> truncated, as a plain string replace of its exact value; an ip written
            -- differently (spacing) is still caught by scrub, which truncates any full address
            CASE WHEN ip IS NULL THEN r.context::VARCHAR
                 ELSE replace(r.context::VARCHAR, '"ip":"' || ip || '"',
                              '"ip":' || coalesce('"' || truncate_ip(ip) || '"', 'null')) END AS context_ip,
            -- Segment alias records carry the user's previous id: pseudonymized like userId (the key is
            -- looked for in `extra`, where it is written unescaped whatever its form in the line)
            CASE WHEN contains(extra_base, '"previousId"')
                 THEN json_merge_patch(extra_base, json_object('previousId', pseudonym(extra_base->>'$.previousId')))
                 ELSE extra_base END AS extra_fields
        FROM with_ip
    )
    SELECT
        arrival_date, source_file, line_no,
        $ingested_at::TIMESTAMP AS ingested_at,
        r.messageId AS message_id,
        r.type AS type,
        r.event AS event,
        pseudonym(r.userId) AS user_id,
        pseudonym(r.anonymousId) AS anonymous_id,
        r.timestamp AS timestamp,
        r.sentAt AS sent_at,
        r.receivedAt AS received_at,
        r.originalTimestamp AS original_timestamp,
        scrub(r.properties::VARCHAR) AS properties,
        scrub(strip_trait_pii(context_ip::JSON)::VARCHAR) AS context,
        CASE WHEN ok THEN scrub(strip_trait_pii(extra_fields)::VARCHAR) END AS extra,
        {_PARSE_ERROR} AS parse_error,
        CASE WHEN NOT ok THEN {_UNPARSED_TEXT} END AS raw_text
    FROM patched
"""

_REQUEST_FIELDS = ("timestamp", "service", "endpoint", "host", "status", "latency_ms", "cpu_pct", "memory_mb")
_REQUEST_SHAPE = "{" + ", ".join(f'"{f}": "VARCHAR"' for f in _REQUEST_FIELDS) + "}"

RAW_REQUESTS_SELECT = f"""
    SELECT
        arrival_date, source_file, line_no,
        $ingested_at::TIMESTAMP AS ingested_at,
        CASE WHEN ok THEN md5(concat_ws('|', r.timestamp, r.service, r.host, r.endpoint,
            r.status, r.latency_ms)) END AS record_id,
        r.timestamp, r.service, r.endpoint, r.host, r.status, r.latency_ms, r.cpu_pct, r.memory_mb,
        {_PARSE_ERROR} AS parse_error,
        CASE WHEN NOT ok THEN {_UNPARSED_TEXT} END AS raw_text
    FROM ({_PARSED.format(shape=_REQUEST_SHAPE)})
"""

SOURCES = {
    "events": (RAW_EVENTS, RAW_EVENTS_SELECT),
    "requests": (RAW_REQUESTS, RAW_REQUESTS_SELECT),
}


@dataclass
class IngestReport:
    source: str
    files_ingested: int = 0
    files_partial: int = 0  # read, but some records could not be (quarantined with the reason)
    files_rejected: int = 0  # nothing could be read (one quarantined record for the file)
    files_redelivered: int = 0
    files_already_known: int = 0
    files_refused: int = 0  # links leaving the landing root, non-regular files, unknown extensions
    files_skipped: int = 0  # hidden and in-flight temp names
    rows_ingested: int = 0
    rows_unreadable: int = 0
    rows_redelivered: int = 0
    bytes_ingested: int = 0
    # (path, status, reason) of every file that did not ingest cleanly: the alerts and the log name them
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    def as_metadata(self) -> dict:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


def clear_partition(con, source: str, start: date, end: date) -> None:
    """Delete raw rows and file registrations for an arrival-day range (explicit re-ingest only)."""
    table, _ = SOURCES[source]
    con.execute(f"DELETE FROM {table.name} WHERE arrival_date BETWEEN ? AND ?", [start, end])
    con.execute(
        f"DELETE FROM {SOURCE_FILES.name} WHERE source = ? AND arrival_date BETWEEN ? AND ?",
        [source, start, end],
    )


@dataclass
class _Registration:
    path: str
    format: str | None
    sha256: str | None
    bytes: int | None
    status: str
    reason: str | None = None
    duplicate_of: str | None = None
    rows: int | None = 0  # None: a re-delivery whose original is not registered yet (counted on reading)
    unreadable: int = 0
    landed: landing.LandedFile | None = None
    day: date | None = None  # arrival day


BATCH_BYTES = 128 * 2**20  # landed bytes read in one scan and committed at once by a range run


def ingest_day(
    con, root, source: str, day: date, run_id: str, report: IngestReport,
    earlier: landing.EarlierFiles | None = None,
) -> IngestReport:
    """`ingest_days` of one day, counted into ``report``."""
    ingest_days(con, root, source, day, day, run_id, earlier, reports={day: report})
    return report


def ingest_days(
    con, root, source: str, start: date, end: date, run_id: str,
    earlier: landing.EarlierFiles | None = None, batch_bytes: int = BATCH_BYTES,
    reports: dict[date, IngestReport] | None = None,
) -> dict[date, IngestReport]:
    """Ingest every file that landed for ``source`` on the days [start, end] and is not registered
    yet; one report per day.

    The new files of consecutive days are read and committed together, in batches of up to
    ``batch_bytes`` landed bytes (a bigger day is a batch of its own): a long sparse range costs a
    few scans and transactions, not one per day.

    A bad file costs only itself. All new files of a batch are read in one DuckDB scan when they
    can be (DuckDB parallelizes across them); when that scan fails, each file is read on its own,
    and a file DuckDB refuses whole is read record by record (`lib/salvage.py`), so its readable
    records are kept and the rest land as raw rows with a `parse_error` (quarantined downstream).
    Every file is registered in `raw.source_files` with a status (ingested, partial, rejected,
    redelivered, refused) and a reason, in the same transaction as its rows. Reading happens before
    the transaction, so a reader error never aborts it.

    A byte-identical copy of a file landed earlier (an earlier day, or earlier in name order the
    same day) is a re-delivery: registered, its rows counted, not ingested. The original is decided
    from the landing area (``earlier``, see `landing.EarlierFiles`), so days may be ingested in any
    order or at once with the same result.
    """
    earlier = earlier or earlier_files(con, root, source, end)
    reports = reports if reports is not None else {}
    registered = _registered(con, source, start, end)
    batch: list[tuple[date, list, list]] = []
    batch_size = 0
    for day in days_between(start, end):
        report = reports.setdefault(day, IngestReport(source))
        to_read, others = _classify(con, root, source, day, report, earlier, registered.get(day, {}))
        size = sum(f.bytes for f, _ in to_read)
        if batch and batch_size + size > batch_bytes:
            _ingest_batch(con, source, run_id, batch, reports)
            batch, batch_size = [], 0
        if to_read or others:
            batch.append((day, to_read, others))
            batch_size += size
    if batch:
        _ingest_batch(con, source, run_id, batch, reports)
    return reports


def _ingest_batch(con, source: str, run_id: str, batch: list[tuple[date, list, list]],
                  reports: dict[date, IngestReport]) -> None:
    """Read and commit the new files of a batch of days ``[(day, to_read, others)]`` (`_classify`)."""
    to_read = [(day, f, checksum) for day, files, _ in batch for f, checksum in files]
    others = [reg for _, _, regs in batch for reg in regs]
    # a re-delivery of a file not ingested yet (its day runs later, or at once) is read to count its rows
    count_only = [reg for reg in others if reg.status == "redelivered" and reg.rows is None]
    read_failures = staging.stage(con, [f for _, f, _ in to_read] + [reg.landed for reg in count_only])
    outcomes = staging.outcomes(con)
    new = []
    for day, f, checksum in to_read:
        status, reason, rows, unreadable = outcomes.get(f.relative, ("ingested", None, 0, 0))
        if reason and f.relative in read_failures:
            reason += f" ({read_failures[f.relative]})"
        new.append(_Registration(f.relative, f.format, checksum, f.bytes, status, reason, rows=rows,
                                 unreadable=unreadable, day=day))
    rows_of = {r.path: r.rows for r in new}
    for reg in others:
        if reg.rows is None:
            reg.rows = outcomes.get(reg.path, ("", None, 0, 0))[2]
        elif reg.status == "redelivered":
            reg.rows = rows_of.get(reg.duplicate_of) or _registered_rows(con, source, reg.duplicate_of)
    if count_only:
        con.execute("DELETE FROM _lines WHERE list_contains(?, source_file)", [[reg.path for reg in count_only]])
    # the arrival day of every staged file: one batch may hold several days
    con.execute("CREATE OR REPLACE TEMP TABLE _file_days (source_file VARCHAR, arrival_date DATE)")
    if new:
        insert_rows(con, "_file_days", ["source_file", "arrival_date"], [[reg.path, reg.day] for reg in new])

    writer = _Writer(con, source, run_id)
    try:
        writer.commit("TRUE", new + others)
    except duckdb.Error:
        # A record that reads but cannot be projected (an engine edge case): isolate the file that
        # holds it, commit the others, and keep the bad file's records as unprocessable.
        for reg in new:
            where = f"source_file = {literal(reg.path)}"
            try:
                writer.commit(where, [reg])
            except duckdb.Error as error:
                con.execute("UPDATE _lines SET read_error = 'unprocessable' WHERE " + where)
                reg.status, reg.unreadable = "rejected", reg.rows
                reg.reason = f"records could not be processed ({salvage.safe_error(error, detail=False)})"
                writer.commit(where, [reg])
        writer.commit(None, others)
    con.execute("DROP TABLE IF EXISTS _lines")
    con.execute("DROP TABLE IF EXISTS _file_days")
    for reg in new + others:
        _count(reports[reg.day], reg)


def _classify(con, root, source: str, day: date, report: IngestReport, earlier: landing.EarlierFiles,
              registered: dict[str, str | None]):
    """The day's files that are new: ``(to_read [(file, sha256)], others [registrations])``, where
    others are re-deliveries and refused entries (registered without reading); ``registered``: the
    day's registered paths with their checksum."""
    listing = landing.scan_day(root, source, day)
    report.files_skipped += listing.skipped
    to_read: list[tuple[landing.LandedFile, str]] = []
    others = [_Registration(relative, landing.file_format(relative), None, None, "refused", reason, day=day)
              for relative, reason in listing.refused if relative not in registered]
    first_path_of: dict[str, str] = {}
    for landed in listing.files:  # name order
        if landed.format is None:
            if landed.relative not in registered:
                others.append(_Registration(landed.relative, None, None, landed.bytes, "refused", "unsupported_format",
                                            day=day))
            continue
        checksum = landing.sha256_of(landed.path)
        if landed.relative in registered:
            if registered[landed.relative] not in (checksum, None):
                report.problems.append((landed.relative, "changed", "changed after it was ingested; landed files are "
                                        "immutable: deliver the correction under a new name"))
            else:
                report.files_already_known += 1
            continue
        if checksum in first_path_of:  # earlier the same day
            others.append(_Registration(landed.relative, landed.format, checksum, landed.bytes, "redelivered",
                                        duplicate_of=first_path_of[checksum], day=day))
            continue
        first_path_of[checksum] = landed.relative
        original = earlier.first_with(checksum, landed.bytes, day)
        if original is None:
            to_read.append((landed, checksum))
        else:
            reg = _Registration(landed.relative, landed.format, checksum, landed.bytes, "redelivered",
                                duplicate_of=original.relative, rows=None, landed=landed, day=day)
            reg.rows = _registered_rows(con, source, original.relative)  # None: read it to count its rows
            others.append(reg)
    return to_read, others


def _count(report: IngestReport, reg: _Registration) -> None:
    if reg.status in ("ingested", "partial", "rejected"):
        setattr(report, f"files_{reg.status}", getattr(report, f"files_{reg.status}") + 1)
        report.rows_ingested += reg.rows
        report.rows_unreadable += reg.unreadable
        report.bytes_ingested += reg.bytes or 0
    elif reg.status == "redelivered":
        report.files_redelivered += 1
        report.rows_redelivered += reg.rows
    else:
        report.files_refused += 1
    if reg.status in ("partial", "rejected", "refused"):
        report.problems.append((reg.path, reg.status, reg.reason or ""))


@dataclass
class _Writer:
    """Commits staged rows (of one or more arrival days) with their file registrations."""

    con: object
    source: str
    run_id: str
    started_at: datetime = field(default_factory=utc_now)
    commits: int = 0

    def commit(self, rows_where: str | None, registrations: list[_Registration]) -> None:
        """One transaction: the staged rows matching `rows_where` (None: no rows) and the registrations.

        Each commit has its own `ingested_at` (a microsecond apart), which identifies its batch:
        the suppression list (`forget.drop_suppressed`) then removes forgotten users from exactly it.
        """
        con = self.con
        table, select_sql = SOURCES[self.source]
        ingested_at = self.started_at + timedelta(microseconds=self.commits)
        self.commits += 1
        with transaction(con):
            if rows_where is not None:
                records = f"SELECT * FROM _lines JOIN _file_days USING (source_file) WHERE {rows_where}"
                con.execute(f"INSERT INTO {table.name} BY NAME {select_sql.replace('{records}', records)}",
                            {"ingested_at": ingested_at})
                days = sorted({reg.day for reg in registrations})
                forget.drop_suppressed(con, self.source, days, ingested_at)  # forgotten users stay out
            insert_rows(
                con, SOURCE_FILES.name,
                ["source", "arrival_date", "path", "format", "sha256", "bytes", "rows", "status", "reason",
                 "duplicate_of", "ingested_at", "run_id"],
                [[self.source, reg.day, reg.path, reg.format, reg.sha256, reg.bytes, reg.rows, reg.status,
                  reg.reason, reg.duplicate_of, ingested_at, self.run_id] for reg in registrations],
            )


def _registered(con, source: str, start: date, end: date) -> dict[date, dict[str, str | None]]:
    """Per day of [start, end]: the paths already registered, with their checksum."""
    out: dict[date, dict[str, str | None]] = {}
    for day, path, sha256 in con.execute(
        f"SELECT arrival_date, path, sha256 FROM {SOURCE_FILES.name} WHERE source = ? AND arrival_date BETWEEN ? AND ?",
        [source, start, end],
    ).fetchall():
        out.setdefault(day, {})[path] = sha256
    return out


def earlier_files(con, root, source: str, until: date) -> landing.EarlierFiles:
    """The files landed before ``until`` (originals of re-deliveries), with the checksums the registry
    already knows (not hashed again). One per ingestion step: ``ingest_days`` of any days <= ``until``."""
    known = dict(con.execute(
        f"SELECT path, sha256 FROM {SOURCE_FILES.name} WHERE source = ? AND arrival_date < ? AND sha256 IS NOT NULL",
        [source, until],
    ).fetchall())
    return landing.EarlierFiles(root, source, until, known=known)


def _registered_rows(con, source: str, path: str) -> int | None:
    """Rows of a registered file; None when it is not registered."""
    row = con.execute(f"SELECT rows FROM {SOURCE_FILES.name} WHERE source = ? AND path = ?", [source, path]).fetchone()
    return row[0] if row else None
