"""The clean layer: raw rows of an arrival-day range -> clean, quarantined or duplicate.

For each raw row, exactly one of:
* **duplicate**  a later delivery of a dedupe key (messageId / request fingerprint) that was
                 delivered before: in an earlier arrival day, or earlier the same day (by
                 receivedAt, then file, then line). The first delivery is the original, whatever
                 became of it; this depends only on the immutable raw layer, so it does not matter
                 in which order partitions are (re)built.
* **quarantined** unparseable, or failing the pandera contract; kept with the reason.
* **clean**      typed, normalized, and written to the clean table.

All writes for the range happen in one transaction after deleting the range (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import pandas as pd
import pandera.pandas as pa

from de_assets.lib import contracts, rawstore
from de_assets.lib.tables import (
    CLEAN_EVENTS,
    CLEAN_REQUESTS,
    DUPLICATES_EVENTS,
    DUPLICATES_REQUESTS,
    QUARANTINE_EVENTS,
    QUARANTINE_REQUESTS,
    RAW_EVENTS,
    RAW_REQUESTS,
    Table,
)

_TS = "try_cast({0} AS TIMESTAMPTZ)::TIMESTAMP"

EVENTS_TYPED = f"""
    SELECT *,
        CASE WHEN sent_ts IS NOT NULL AND received_ts IS NOT NULL AND ts IS NOT NULL
             THEN received_ts - (sent_ts - ts) ELSE ts END AS event_ts,
        date_diff('millisecond', received_ts, sent_ts) / 1000.0 AS clock_skew_seconds,
        try_cast(revenue_text AS DOUBLE) AS revenue
    FROM (
        SELECT row_id, arrival_date, source_file, line_no,
            message_id,
            lower(trim(type)) AS type,
            nullif(trim(event), '') AS event,
            coalesce(user_id, anonymous_id) AS user_key, user_id, anonymous_id,
            {_TS.format("timestamp")} AS ts,
            {_TS.format("sent_at")} AS sent_ts,
            {_TS.format("received_at")} AS received_ts,
            timestamp IS NOT NULL AS timestamp_sent,
            json_type(properties) AS properties_type,
            coalesce(properties->>'$.revenue', properties->>'$.total') AS revenue_text,
            revenue_text IS NOT NULL AS revenue_sent,
            properties->>'$.experiment_id' AS experiment_id,
            properties->>'$.variant_id' AS variant_id,
            properties, context
        FROM _cur
        WHERE parse_error IS NULL AND row_id NOT IN (SELECT row_id FROM _dup)
    )
"""

_EPOCH = "try_cast(trim(timestamp) AS DOUBLE)"
REQUESTS_TYPED = f"""
    SELECT row_id, arrival_date, source_file, line_no, record_id,
        CASE WHEN regexp_full_match(trim(timestamp), '\\d+(\\.\\d+)?')
             THEN to_timestamp(CASE WHEN {_EPOCH} > 1e11 THEN {_EPOCH} / 1000 ELSE {_EPOCH} END)::TIMESTAMP
             ELSE {_TS.format("timestamp")} END AS request_ts,
        lower(trim(service)) AS service,
        trim(endpoint) AS endpoint,
        trim(host) AS host,
        try_cast(trim(status) AS DOUBLE) AS status,
        try_cast(trim(latency_ms) AS DOUBLE) AS latency_ms,
        try_cast(trim(cpu_pct) AS DOUBLE) AS cpu_pct,
        try_cast(trim(memory_mb) AS DOUBLE) AS memory_mb
    FROM _cur
    WHERE parse_error IS NULL AND row_id NOT IN (SELECT row_id FROM _dup)
"""


@dataclass(frozen=True)
class CleanSpec:
    raw: Table
    clean: Table
    quarantine: Table
    duplicates: Table
    key: str  # dedupe key column in the raw table
    typed_sql: str  # over `_cur` minus `_dup`; must yield row_id + every contract and clean column
    contract: type[pa.DataFrameModel]
    clean_select: str  # projection of `_typed` onto the clean table's columns
    event_time: str  # typed event-time column of `_typed` (for the late-data lookback)


EVENTS = CleanSpec(
    raw=RAW_EVENTS,
    clean=CLEAN_EVENTS,
    quarantine=QUARANTINE_EVENTS,
    duplicates=DUPLICATES_EVENTS,
    key="message_id",
    typed_sql=EVENTS_TYPED,
    contract=contracts.EventContract,
    clean_select="event_ts::DATE AS event_date, * EXCLUDE (ts, timestamp_sent, properties_type, revenue_text, revenue_sent)",
    event_time="event_ts",
)

REQUESTS = CleanSpec(
    raw=RAW_REQUESTS,
    clean=CLEAN_REQUESTS,
    quarantine=QUARANTINE_REQUESTS,
    duplicates=DUPLICATES_REQUESTS,
    key="record_id",
    typed_sql=REQUESTS_TYPED,
    contract=contracts.RequestContract,
    clean_select="request_ts::DATE AS event_date, * REPLACE (status::INTEGER AS status)",
    event_time="request_ts",
)


@dataclass
class CleanReport:
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    rows_duplicate: int
    reasons: dict[str, int]
    gated_days: list[str] = field(default_factory=list)  # ranges withheld by the quality gate

    @property
    def quarantine_rate(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    @classmethod
    def total(cls, reports) -> "CleanReport":
        out = cls(0, 0, 0, 0, {})
        for r in reports:
            out.rows_in += r.rows_in
            out.rows_clean += r.rows_clean
            out.rows_quarantined += r.rows_quarantined
            out.rows_duplicate += r.rows_duplicate
            for reason, n in r.reasons.items():
                out.reasons[reason] = out.reasons.get(reason, 0) + n
            out.gated_days += r.gated_days
        return out

    def as_metadata(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_clean": self.rows_clean,
            "rows_quarantined": self.rows_quarantined,
            "rows_duplicate": self.rows_duplicate,
            "quarantine_rate": self.quarantine_rate,
            "duplicate_rate": self.rows_duplicate / self.rows_in if self.rows_in else 0.0,
        }


def _raw_row_json(table: Table) -> str:
    lineage = {"arrival_date", "source_file", "line_no", "ingested_at"}
    fields = ", ".join(f'"{c}" := "{c}"' for c in table.column_names if c not in lineage)
    return f"to_json(struct_pack({fields}))"


VALIDATION_CHUNK_ROWS = 250_000


def _validate_in_chunks(con, contract: type[pa.DataFrameModel]) -> pd.DataFrame:
    """Run the pandera contract over `_typed` in bounded chunks; only the contract's columns go to
    pandas, so memory stays flat however large the partition is."""
    columns = ", ".join(
        f"{c}::TIMESTAMP AS {c}" if c == "arrival_date" else c for c in contract.to_schema().columns
    )
    [(last,)] = con.execute("SELECT coalesce(max(row_id), 0) FROM _typed").fetchall()
    failures = [contracts.no_failures()]
    for low in range(1, last + 1, VALIDATION_CHUNK_ROWS):
        frame = con.execute(
            f"SELECT row_id, {columns} FROM _typed WHERE row_id BETWEEN ? AND ? ORDER BY row_id",
            [low, low + VALIDATION_CHUNK_ROWS - 1],
        ).df().set_index("row_id")
        if not frame.empty:
            failures.append(contracts.failing_rows(contract, frame))
    return pd.concat(failures, ignore_index=True)


DEDUPE_STRATEGIES = ("window", "arg_min")


def _duplicates_sql(key: str, earlier: str, strategy: str) -> str:
    """Rows of `_cur` that are a later delivery of a dedupe key: `row_id, key`.

    The first delivery is the smallest (arrival_date, receivedAt [missing last], source_file,
    line_no). Two equivalent implementations behind the `dedupe_strategy` flag: `window` ranks
    every delivery with row_number(); `arg_min` keeps the first row per key with one hash
    aggregate. Same rows either way (tested); which is faster is what the config experiment measures.
    """
    if strategy not in DEDUPE_STRATEGIES:
        raise ValueError(f"dedupe_strategy must be one of {DEDUPE_STRATEGIES}, got {strategy!r}")
    received = "try_cast(received_at AS TIMESTAMPTZ)" if key == "message_id" else "NULL::TIMESTAMPTZ"
    candidates = f"SELECT row_id, {key}, arrival_date, {received} AS received, source_file, line_no " \
                 f"FROM _cur WHERE {key} IS NOT NULL AND parse_error IS NULL"
    if strategy == "window":
        later = f"""SELECT row_id, {key} FROM (
                        SELECT row_id, {key}, row_number() OVER (PARTITION BY {key} ORDER BY arrival_date,
                               received NULLS LAST, source_file, line_no) AS delivery
                        FROM ({candidates})) WHERE delivery > 1"""
    else:
        later = f"""SELECT c.row_id, c.{key} FROM ({candidates}) c
                    JOIN (SELECT {key}, arg_min(row_id, (arrival_date, coalesce(received, 'infinity'::TIMESTAMPTZ),
                                                        source_file, line_no)) AS first_row
                          FROM ({candidates}) GROUP BY {key}) f USING ({key})
                    WHERE c.row_id <> f.first_row"""
    return f"""
        WITH keys AS (SELECT DISTINCT {key} FROM _cur WHERE {key} IS NOT NULL AND parse_error IS NULL),
        delivered_before AS (
            SELECT DISTINCT {key} FROM {earlier}
            WHERE arrival_date < $start AND parse_error IS NULL AND {key} IN (SELECT {key} FROM keys)
        )
        {later}
        UNION
        SELECT row_id, {key} FROM _cur WHERE {key} IN (SELECT {key} FROM delivered_before) AND parse_error IS NULL
    """


def clean_range(
    con, spec: CleanSpec, start: date, end: date, max_quarantine_rate: float | None = None,
    dedupe_strategy: str = "window", late_lookback_days: int | None = None,
) -> CleanReport:
    """Rebuild the clean/quarantine/duplicate rows of arrival days [start, end].

    Quality gate: when more than `max_quarantine_rate` of the range's rows fail the contract, the
    range is not written at all; its previous clean/quarantine rows stay as they were (the report
    lists the range in `gated_days`), so a broken delivery never replaces good data.

    Late data: a valid row whose event happened more than `late_lookback_days` before its arrival
    day is quarantined as `too_late` (its day's marts are closed); later ones are clean and counted
    toward their own event day, whose marts the `late_data_refresh` sensor re-materializes.
    """
    params = {"start": start, "end": end}
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _cur AS SELECT row_number() OVER () AS row_id, * "
        f"FROM {rawstore.relation(con, spec.raw, start, end)} WHERE arrival_date BETWEEN $start AND $end",
        params,
    )
    earlier = rawstore.relation(con, spec.raw, None, start - timedelta(days=1))
    con.execute(f"CREATE OR REPLACE TEMP TABLE _dup AS {_duplicates_sql(spec.key, earlier, dedupe_strategy)}",
                {"start": start})
    con.execute(f"CREATE OR REPLACE TEMP TABLE _typed AS {spec.typed_sql}")

    failures = _validate_in_chunks(con, spec.contract)
    con.register("_failures_df", failures)
    con.execute("CREATE OR REPLACE TEMP TABLE _fail AS SELECT row_id::BIGINT AS row_id, reason::VARCHAR AS reason "
                "FROM _failures_df")
    con.unregister("_failures_df")
    if late_lookback_days is not None:  # valid, but too old to re-open its day: quarantined, counted
        con.execute(
            f"INSERT INTO _fail SELECT row_id, 'too_late' FROM _typed "
            f"WHERE {spec.event_time}::DATE < arrival_date - {int(late_lookback_days)} "
            "AND row_id NOT IN (SELECT row_id FROM _fail)"
        )

    rows_in, dups, quarantined = con.execute(
        "SELECT (SELECT count(*) FROM _cur), (SELECT count(*) FROM _dup), "
        "(SELECT count(*) FROM _cur WHERE parse_error IS NOT NULL) + (SELECT count(*) FROM _fail)"
    ).fetchall()[0]
    reasons = dict(
        con.execute(
            "SELECT coalesce(c.parse_error, f.reason) AS reason, count(*) FROM _cur c LEFT JOIN _fail f USING (row_id) "
            "WHERE c.parse_error IS NOT NULL OR f.row_id IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
    )
    gated = max_quarantine_rate is not None and rows_in > 0 and quarantined / rows_in > max_quarantine_rate
    if not gated:
        _write(con, spec, params)
    for temp in ("_cur", "_dup", "_typed", "_fail"):
        con.execute(f"DROP TABLE IF EXISTS {temp}")
    return CleanReport(rows_in, rows_in - dups - quarantined, quarantined, dups, reasons, [_label(start, end)] if gated else [])


def _label(start: date, end: date) -> str:
    return str(start) if start == end else f"{start}..{end}"


def _write(con, spec: CleanSpec, params: dict) -> None:
    """Replace the range's clean, quarantine and duplicate rows in one transaction."""
    key = spec.key
    con.execute("BEGIN TRANSACTION")
    try:
        for table in (spec.clean, spec.quarantine, spec.duplicates):
            con.execute(f"DELETE FROM {table.name} WHERE arrival_date BETWEEN $start AND $end", params)
        con.execute(
            f"""
            INSERT INTO {spec.quarantine.name} BY NAME
            SELECT c.arrival_date, c.source_file, c.line_no, coalesce(c.parse_error, f.reason) AS reason,
                   {_raw_row_json(spec.raw)} AS raw_row, c.ingested_at
            FROM _cur c LEFT JOIN _fail f USING (row_id)
            WHERE c.parse_error IS NOT NULL OR f.row_id IS NOT NULL
            """
        )
        con.execute(
            f"INSERT INTO {spec.duplicates.name} BY NAME SELECT c.arrival_date, c.source_file, c.line_no, "
            f"c.{key} AS dedupe_key FROM _cur c JOIN _dup USING (row_id)"
        )
        con.execute(
            f"INSERT INTO {spec.clean.name} BY NAME SELECT {spec.clean_select} "
            f"FROM (SELECT * EXCLUDE (row_id) FROM _typed WHERE row_id NOT IN (SELECT row_id FROM _fail))"
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def late_event_days(con, spec: CleanSpec, start: date, end: date) -> list[date]:
    """Event days before `start` that rows arriving in [start, end] count toward (late data)."""
    rows = con.execute(
        f"SELECT DISTINCT event_date FROM {spec.clean.name} WHERE arrival_date BETWEEN ? AND ? "
        "AND event_date < ? ORDER BY 1",
        [start, end, start],
    ).fetchall()
    return [d for (d,) in rows]


def accounting(con, spec: CleanSpec, source: str, days: list[date]) -> dict:
    """Count, independently from the tables, where every landed row of the arrival days went (the
    days the quality gate let through; held-back days were not written).

    The identity that must hold: rows landed = clean + quarantined + duplicates, where
    duplicates are re-delivered rows plus the rows of byte-identical re-delivered files.
    """
    if not days:  # every day held back by the gate: nothing was written, nothing to account for
        return {"days_checked": 0, "balanced": True}
    window = "list_contains($days, arrival_date)"
    params = {"days": days}
    start, end = min(days), max(days)
    landed, redelivered = con.execute(
        f"SELECT coalesce(sum(rows), 0), coalesce(sum(rows) FILTER (WHERE status = 'redelivered'), 0) "
        f"FROM raw.source_files WHERE source = $source AND {window}",
        {**params, "source": source},
    ).fetchone()
    counts = {
        name: con.execute(f"SELECT count(*) FROM {rawstore.relation(con, table, start, end)} WHERE {window}",
                          params).fetchone()[0]
        for name, table in (("raw", spec.raw), ("clean", spec.clean), ("quarantined", spec.quarantine),
                            ("duplicate_rows", spec.duplicates))
    }
    [(forgotten,)] = con.execute(  # rows erased by forget-user requests left the books on purpose
        f"SELECT coalesce(sum(rows), 0) FROM raw.forgotten_rows WHERE source = $source AND {window}",
        {**params, "source": source},
    ).fetchall()
    landed = int(landed) - int(forgotten)
    duplicates = counts["duplicate_rows"] + redelivered
    return {
        "days_checked": len(days),
        "rows_landed": int(landed),
        "rows_raw": counts["raw"],
        "rows_clean": counts["clean"],
        "rows_quarantined": counts["quarantined"],
        "rows_duplicate": int(duplicates),
        "rows_in_redelivered_files": int(redelivered),
        "rows_forgotten": int(forgotten),
        "balanced": int(landed) == counts["clean"] + counts["quarantined"] + duplicates
        and counts["raw"] == counts["clean"] + counts["quarantined"] + counts["duplicate_rows"],
    }
