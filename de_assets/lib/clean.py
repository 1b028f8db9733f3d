"""The clean layer: raw rows of an arrival-day range -> clean, quarantined or duplicate.

For each raw row, exactly one of:
* **duplicate**  a later delivery of a dedupe key (messageId / request fingerprint) that was
                 delivered before: in an earlier arrival day, or earlier the same day (by
                 receivedAt, then file, then line). The first delivery is the original, whatever
                 became of it; this depends only on the immutable raw layer, so it does not matter
                 in which order partitions are (re)built.
* **quarantined** unparseable, or failing the pandera contract; kept with the reason.
* **clean**      typed, normalized, and written to the clean table.

All writes for the range happen in one transaction after deleting the range (idempotent). The
three tables are kept in the lake: a step writes them in its staging overlay (`lib/staged.py`) and
publishes the staged days once its checks passed.

A duplicate whose content differs from the original delivery's (`CleanSpec.content_columns`:
every raw field except the lineage columns, the key itself and, for events, `sent_at` /
`received_at`, which legitimately change between retries, and `extra`, the transport fields outside
the event's content, which differ between delivery paths) is flagged `conflict` in the duplicates
table, with the names of the fields that differ.

When the quarantine-rate gate holds a range back, its clean rows are not replaced (the previously
served rows stay served), but its evidence is written: rejected rows to the quarantine table
(`status = 'rejected'`), the rows that passed the contract but are not served to the quarantine
table as well (`status = 'held_back'`, reason `held_back:quarantine_rate`), and its duplicates.
Every landed row is then in exactly one place either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import pandera.pandas as pa

from de_assets.lib import contracts, staged
from de_assets.lib.clean_sql import EVENTS_TYPED, REQUESTS_TYPED
from de_assets.lib.days import days_between, short_label
from de_assets.lib.sql import transaction
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


@dataclass(frozen=True)
class CleanSpec:
    raw: Table
    clean: Table
    quarantine: Table
    duplicates: Table
    key: str  # dedupe key column in the raw table
    typed_sql: str  # over `_cur` minus `_dup`; must yield row_id + every contract and clean column
    contract: Callable[[pd.Timestamp | None], type[pa.DataFrameModel]]  # earliest event time -> contract
    clean_select: str  # projection of `_typed` onto the clean table's columns
    event_time: str  # typed event-time column of `_typed` (for the late-data lookback)
    content_columns: tuple[str, ...]  # raw fields two deliveries of one key must share to be the same record


EVENTS = CleanSpec(
    raw=RAW_EVENTS,
    clean=CLEAN_EVENTS,
    quarantine=QUARANTINE_EVENTS,
    duplicates=DUPLICATES_EVENTS,
    key="message_id",
    typed_sql=EVENTS_TYPED,
    contract=contracts.event_contract,
    clean_select="event_ts::DATE AS event_date, * EXCLUDE (ts, timestamp_sent, properties_type, revenue_text, revenue_sent)",
    event_time="event_ts",
    # not: lineage (arrival_date, source_file, line_no, ingested_at), the key, sent_at/received_at
    # (a retry is re-sent and re-received), parse_error/raw_text (NULL for every parsed row), extra
    # (transport fields: a CSV export of an event carries no `integrations`/`channel`/`version`)
    content_columns=("type", "event", "user_id", "anonymous_id", "timestamp", "original_timestamp",
                     "properties", "context"),
)

REQUESTS = CleanSpec(
    raw=RAW_REQUESTS,
    clean=CLEAN_REQUESTS,
    quarantine=QUARANTINE_REQUESTS,
    duplicates=DUPLICATES_REQUESTS,
    key="record_id",
    typed_sql=REQUESTS_TYPED,
    contract=contracts.request_contract,
    clean_select="request_ts::DATE AS event_date, * REPLACE (status::INTEGER AS status)",
    event_time="request_ts",
    # the fingerprint covers all but cpu_pct / memory_mb, so only those can conflict
    content_columns=("timestamp", "service", "endpoint", "host", "status", "latency_ms", "cpu_pct", "memory_mb"),
)


@dataclass
class CleanReport:
    """Where the range's raw rows went, as written. On a held-back range `rows_clean` counts the
    previously served rows that stay served and `rows_held_back` the rows that passed the contract
    but went to the quarantine table instead (rows_in = clean + quarantined + duplicate + held back,
    unless raw rows of served clean rows were removed since)."""

    rows_in: int
    rows_clean: int
    rows_quarantined: int
    rows_duplicate: int
    reasons: dict[str, int]
    gated_days: list[str] = field(default_factory=list)  # ranges withheld by the quality gate
    rows_held_back: int = 0
    rows_duplicate_conflicting: int = 0
    conflicting_fields: dict[str, int] = field(default_factory=dict)  # field list -> duplicate rows

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
            out.rows_held_back += r.rows_held_back
            out.rows_duplicate_conflicting += r.rows_duplicate_conflicting
            for reason, n in r.reasons.items():
                out.reasons[reason] = out.reasons.get(reason, 0) + n
            for fields, n in r.conflicting_fields.items():
                out.conflicting_fields[fields] = out.conflicting_fields.get(fields, 0) + n
            out.gated_days += r.gated_days
        return out

    def as_metadata(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_clean": self.rows_clean,
            "rows_quarantined": self.rows_quarantined,
            "rows_held_back": self.rows_held_back,
            "rows_duplicate": self.rows_duplicate,
            "rows_duplicate_conflicting": self.rows_duplicate_conflicting,
            "quarantine_rate": self.quarantine_rate,
            "duplicate_rate": self.rows_duplicate / self.rows_in if self.rows_in else 0.0,
        }


def _raw_row_json(table: Table) -> str:
    lineage = {"arrival_date", "source_file", "line_no", "ingested_at"}
    fields = ", ".join(f'"{c}" := "{c}"' for c in table.column_names if c not in lineage)
    return f"to_json(struct_pack({fields}))"


VALIDATION_CHUNK_ROWS = 250_000
# Rows at the start of each chunk that pandera judges even when SQL proves them valid: pandera keeps
# seeing real frames (its dtype checks run on every chunk), at a negligible cost.
VALIDATION_SAMPLE_ROWS = 1_000


def _validate_in_chunks(con, contract: type[pa.DataFrameModel]) -> pd.DataFrame:
    """Run the pandera contract over `_typed` in bounded chunks; only the contract's columns go to
    pandas, so memory stays flat however large the partition is.

    Rows that the contract's SQL twin (`contracts.sql_proof`) proves valid stay in DuckDB (they pass
    every check, so pandera would report nothing for them); every other row, and the first
    `VALIDATION_SAMPLE_ROWS` of each chunk, is judged by pandera, which writes every reason.
    """
    columns = ", ".join(
        f"{c}::TIMESTAMP AS {c}" if c == "arrival_date" else c for c in contract.to_schema().columns
    )
    proof = contracts.sql_proof(contract)
    judged = "TRUE" if proof is None else f"(row_id < $low + {VALIDATION_SAMPLE_ROWS} OR NOT {proof})"
    [(last,)] = con.execute("SELECT coalesce(max(row_id), 0) FROM _typed").fetchall()
    failures = [contracts.no_failures()]
    for low in range(1, last + 1, VALIDATION_CHUNK_ROWS):
        frame = con.execute(
            f"SELECT row_id, {columns} FROM _typed WHERE row_id BETWEEN $low AND $high AND {judged} ORDER BY row_id",
            {"low": low, "high": low + VALIDATION_CHUNK_ROWS - 1},
        ).df().set_index("row_id")
        if not frame.empty:
            failures.append(contracts.failing_rows(contract, frame))
    return pd.concat(failures, ignore_index=True)


DEDUPE_STRATEGIES = ("window", "arg_min")


def _delivered_before_sql(key: str, earlier: str) -> str:
    """The keys of `_cur` delivered on an earlier arrival day, with those days: `key, arrival_date`.
    The one scan of the history per batch (its key column only); the conflicts then read the content
    of the earlier deliveries from these days alone, not from the whole history."""
    return f"""SELECT DISTINCT {key}, arrival_date FROM {earlier}
               WHERE arrival_date < $start AND parse_error IS NULL
                 AND {key} IN (SELECT {key} FROM _cur WHERE {key} IS NOT NULL AND parse_error IS NULL)"""


def _duplicates_sql(key: str, strategy: str) -> str:
    """Rows of `_cur` that are a later delivery of a dedupe key: `row_id, key` (keys delivered on an
    earlier day are in `_before`, `_delivered_before_sql`).

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
        {later}
        UNION
        SELECT row_id, {key} FROM _cur WHERE {key} IN (SELECT {key} FROM _before) AND parse_error IS NULL
    """


def _conflicts_sql(spec: CleanSpec, earlier: str, earlier_days: list[date]) -> str:
    """Per duplicate row of `_dup`: the content fields that differ from its key's original (first)
    delivery, ', '-separated, or NULL when every content field is equal (NULLs equal, JSON compared
    as stored text). The original is the first delivery in the same order as the dedupe (arrival
    day, receivedAt with missing last, file, line), whatever became of it. Earlier deliveries are
    read from `earlier_days` only (the days `_before` holds them on: a literal list, which DuckDB
    uses to skip the other days' files; reading the content of the whole history cost ~0.08 s per
    100,000 earlier rows, per batch)."""
    key = spec.key
    cols = spec.content_columns
    received = "try_cast(received_at AS TIMESTAMPTZ)" if key == "message_id" else "NULL::TIMESTAMPTZ"
    content = ", ".join(f'"{c}"::VARCHAR AS "{c}"' for c in cols)
    deliveries = (
        f"SELECT {key}, arrival_date, {received} AS received, source_file, line_no, {content} FROM {{src}} "
        f"WHERE parse_error IS NULL AND {key} IN (SELECT {key} FROM _dup) {{where}}"
    )
    differs = ", ".join(f"""CASE WHEN c."{c}"::VARCHAR IS DISTINCT FROM o.orig."{c}" THEN '{c}' END""" for c in cols)
    days = ", ".join(f"DATE '{d.isoformat()}'" for d in earlier_days)
    before = f"{deliveries.format(src=earlier, where=f'AND arrival_date IN ({days})')} UNION ALL" if days else ""
    return f"""
        WITH deliveries AS (
            {before}
            {deliveries.format(src="_cur", where="")}
        ),
        originals AS (
            SELECT {key}, arg_min(struct_pack({", ".join(f'"{c}"' for c in cols)}),
                                  (arrival_date, coalesce(received, 'infinity'::TIMESTAMPTZ), source_file, line_no)) AS orig
            FROM deliveries GROUP BY {key}
        )
        SELECT d.row_id, nullif(concat_ws(', ', {differs}), '') AS conflicting_fields
        FROM _dup d JOIN _cur c USING (row_id) JOIN originals o ON o.{key} = c.{key}
    """


HELD_BACK_REASON = "held_back:quarantine_rate"


BATCH_ROWS = 1_000_000  # raw rows cleaned at once: a range is cleaned in batches of whole days up to this


def clean_range(
    con, spec: CleanSpec, start: date, end: date, max_quarantine_rate: float | None = None,
    dedupe_strategy: str = "window", late_lookback_days: int | None = None,
    earliest_event_time: pd.Timestamp | str | None = None,
) -> CleanReport:
    """`clean_days` over [start, end], summed into one report."""
    return CleanReport.total(clean_days(con, spec, start, end, max_quarantine_rate, dedupe_strategy,
                                        late_lookback_days, earliest_event_time).values())


def clean_days(
    con, spec: CleanSpec, start: date, end: date, max_quarantine_rate: float | None = None,
    dedupe_strategy: str = "window", late_lookback_days: int | None = None,
    earliest_event_time: pd.Timestamp | str | None = None, batch_rows: int = BATCH_ROWS,
) -> dict[date, CleanReport]:
    """Rebuild the clean/quarantine/duplicate rows of arrival days [start, end]; one report per day.

    The days are cleaned in batches of consecutive whole days holding at most `batch_rows` raw rows
    (a bigger day is a batch on its own), so a long sparse range costs a few set-based passes, not
    one per day, and memory stays bounded by the batch however long the range. Every decision is
    the one a day-by-day build makes: the first delivery of a key is decided over all of raw, in
    (arrival day, receivedAt, file, line) order, and the gate below is judged per day.

    Quality gate, per arrival day: when more than `max_quarantine_rate` of a day's rows fail the
    contract, the day's clean rows are not replaced: the previously served rows stay (the day's
    report lists it in `gated_days`), so a broken delivery never replaces good data. The evidence
    is written all the same: rejected rows, the held-back rows (passed the contract, not served;
    reason `held_back:quarantine_rate`) and duplicates.

    Late data: a valid row whose event happened more than `late_lookback_days` before its arrival
    day is quarantined as `too_late` (its day's marts are closed); later ones are clean and counted
    toward their own event day, whose marts the `late_data_refresh` sensor re-materializes.

    Implausibly old: a row whose event time is before `earliest_event_time` (default
    `contracts.DEFAULT_EARLIEST_EVENT_TIME`) fails `<time column>:implausibly_old`.
    """
    contract = spec.contract(contracts.parse_earliest(earliest_event_time))
    sizes = dict(con.execute(
        f"SELECT arrival_date, count(*) FROM {spec.raw.name} WHERE arrival_date BETWEEN $start AND $end GROUP BY 1",
        {"start": start, "end": end},
    ).fetchall())
    reports = {}
    for first, last in _batches(days_between(start, end), sizes, batch_rows):
        reports |= _clean_batch(con, spec, contract, first, last, max_quarantine_rate, dedupe_strategy,
                                late_lookback_days)
    return reports


def _batches(days: list[date], sizes: dict[date, int], batch_rows: int) -> list[tuple[date, date]]:
    """Consecutive days grouped into (first, last) ranges of at most `batch_rows` rows (at least one day)."""
    out: list[tuple[date, date]] = []
    rows = 0
    for day in days:
        n = sizes.get(day, 0)
        if out and rows + n <= batch_rows:
            out[-1] = (out[-1][0], day)
            rows += n
        else:
            out.append((day, day))
            rows = n
    return out


def _clean_batch(
    con, spec: CleanSpec, contract: type[pa.DataFrameModel], start: date, end: date,
    max_quarantine_rate: float | None, dedupe_strategy: str, late_lookback_days: int | None,
) -> dict[date, CleanReport]:
    params = {"start": start, "end": end}
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _cur AS SELECT row_number() OVER () AS row_id, * "
        f"FROM {spec.raw.name} WHERE arrival_date BETWEEN $start AND $end",
        params,
    )
    earlier = spec.raw.name
    con.execute(f"CREATE OR REPLACE TEMP TABLE _before AS {_delivered_before_sql(spec.key, earlier)}", {"start": start})
    con.execute(f"CREATE OR REPLACE TEMP TABLE _dup AS {_duplicates_sql(spec.key, dedupe_strategy)}")
    con.execute("CREATE OR REPLACE TEMP TABLE _conflict (row_id BIGINT, conflicting_fields VARCHAR)")
    if con.execute("SELECT count(*) FROM _dup").fetchone()[0]:
        days = [d for (d,) in con.execute(f"SELECT DISTINCT arrival_date FROM _before "
                                          f"WHERE {spec.key} IN (SELECT {spec.key} FROM _dup) ORDER BY 1").fetchall()]
        con.execute(f"INSERT INTO _conflict {_conflicts_sql(spec, earlier, days)}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _typed AS {spec.typed_sql}")

    failures = _validate_in_chunks(con, contract)
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
    # One fate per raw row of the range (the three sets are disjoint: `_dup` and `_typed` only hold
    # parsed rows, and `_typed` excludes `_dup`).
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _fate AS
           SELECT c.row_id, c.arrival_date,
                  CASE WHEN c.parse_error IS NOT NULL OR f.row_id IS NOT NULL THEN 'quarantined'
                       WHEN d.row_id IS NOT NULL THEN 'duplicate' ELSE 'clean' END AS fate,
                  coalesce(c.parse_error, f.reason) AS reason
           FROM _cur c LEFT JOIN _fail f USING (row_id) LEFT JOIN _dup d USING (row_id)"""
    )
    gated = []
    if max_quarantine_rate is not None:
        gated = [day for day, rows_in, quarantined in con.execute(
            "SELECT arrival_date, count(*), count(*) FILTER (WHERE fate = 'quarantined') FROM _fate GROUP BY 1"
        ).fetchall() if quarantined / rows_in > max_quarantine_rate]
    if gated:
        # a held-back day's served clean rows stay served, and stay counted as clean; every other row
        # of it that passed the contract is held back (written to the quarantine table, not served)
        held = {"gated": gated}
        con.execute(
            f"""UPDATE _fate SET fate = 'kept' WHERE row_id IN (
                    SELECT c.row_id FROM _cur c JOIN {spec.clean.name} t
                    ON t.arrival_date = c.arrival_date AND t.source_file = c.source_file AND t.line_no = c.line_no
                    WHERE list_contains($gated::DATE[], t.arrival_date))""",
            held,
        )
        con.execute(f"UPDATE _fate SET fate = 'held_back', reason = '{HELD_BACK_REASON}' "
                    "WHERE fate = 'clean' AND list_contains($gated::DATE[], arrival_date)", held)
    counts = {}
    for day, fate, n in con.execute("SELECT arrival_date, fate, count(*) FROM _fate GROUP BY 1, 2").fetchall():
        counts.setdefault(day, {})[fate] = n
    reasons = {}
    for day, reason, n in con.execute(
        "SELECT arrival_date, reason, count(*) FROM _fate WHERE fate = 'quarantined' GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"
    ).fetchall():
        reasons.setdefault(day, {})[reason] = n
    conflicting = {}
    for day, fields, n in con.execute(
        "SELECT arrival_date, x.conflicting_fields, count(*) FROM _fate JOIN _conflict x USING (row_id) "
        "WHERE fate = 'duplicate' AND x.conflicting_fields IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"
    ).fetchall():
        conflicting.setdefault(day, {})[fields] = n
    _write(con, spec, params, gated)
    for temp in ("_cur", "_before", "_dup", "_conflict", "_typed", "_fail", "_fate"):
        con.execute(f"DROP TABLE IF EXISTS {temp}")
    reports = {}
    for day in days_between(start, end):
        c = counts.get(day, {})
        reports[day] = CleanReport(
            rows_in=sum(c.values()),
            rows_clean=c.get("clean", 0) + c.get("kept", 0),
            rows_quarantined=c.get("quarantined", 0),
            rows_duplicate=c.get("duplicate", 0),
            reasons=reasons.get(day, {}),
            gated_days=[short_label(day, day)] if day in gated else [],
            rows_held_back=c.get("held_back", 0),
            rows_duplicate_conflicting=sum(conflicting.get(day, {}).values()),
            conflicting_fields=conflicting.get(day, {}),
        )
    return reports


def _write(con, spec: CleanSpec, params: dict, gated: list[date]) -> None:
    """Replace the range's quarantine and duplicate rows, and the clean rows of its days that are
    not held back (`gated`), in one transaction; tables kept in the lake are written to the step's
    staging overlay (`lib/staged.py`), which the step publishes once its checks passed."""
    key = spec.key
    days = days_between(params["start"], params["end"])
    clean_t, quarantine_t, duplicates_t = (staged.target(con, t, days)
                                           for t in (spec.clean, spec.quarantine, spec.duplicates))
    with transaction(con):
        for table in (quarantine_t, duplicates_t):
            con.execute(f"DELETE FROM {table} WHERE arrival_date BETWEEN $start AND $end", params)
        con.execute(f"DELETE FROM {clean_t} WHERE arrival_date BETWEEN $start AND $end "
                    "AND NOT list_contains($gated::DATE[], arrival_date)", {**params, "gated": gated})
        con.execute(
            f"""
            INSERT INTO {quarantine_t} BY NAME
            SELECT c.arrival_date, c.source_file, c.line_no, f.reason,
                   {_raw_row_json(spec.raw)} AS raw_row, c.ingested_at,
                   CASE f.fate WHEN 'held_back' THEN 'held_back' ELSE 'rejected' END AS status
            FROM _cur c JOIN _fate f USING (row_id)
            WHERE f.fate IN ('quarantined', 'held_back')
            """
        )
        con.execute(
            f"INSERT INTO {duplicates_t} BY NAME SELECT c.arrival_date, c.source_file, c.line_no, "
            f"c.{key} AS dedupe_key, x.conflicting_fields IS NOT NULL AS conflict, x.conflicting_fields "
            f"FROM _cur c JOIN _fate f USING (row_id) LEFT JOIN _conflict x USING (row_id) WHERE f.fate = 'duplicate'"
        )
        con.execute(  # a held-back day has no row of fate 'clean': its served rows stay as they are
            f"INSERT INTO {clean_t} BY NAME SELECT {spec.clean_select} FROM (SELECT * EXCLUDE (row_id) "
            f"FROM _typed WHERE row_id IN (SELECT row_id FROM _fate WHERE fate = 'clean'))"
        )
