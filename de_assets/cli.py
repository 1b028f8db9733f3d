"""`de-assets`: generate sample landing data and run the pipeline through Dagster.

    de-assets demo                      # sample data for the last 7 days + materialize everything
    de-assets generate --days 30 --events-per-day 100000
    de-assets run --start 2026-11-01 --end 2026-11-07
    de-assets run --start 2026-11-01 --dry-run   # compute, validate, report; write nothing
    de-assets experiment --start 2026-11-01 --end 2026-11-03 --b lake_compression=snappy --reps 3
    de-assets forget-user --user-id cus_4821 --requested-by dpo@example.org
    de-assets sql "SELECT * FROM marts.daily_engagement" --format csv   # while runs write
    de-assets status                    # one screen: newest partitions, failed checks, SLOs, open alerts

Runs execute in process against the Dagster instance in $DAGSTER_HOME (default data/dagster_home,
created with the dev dagster.yaml: de_assets/instance.py), so `dagster dev` with the same
DAGSTER_HOME shows them in the UI.

`.env` in the working directory is read first, as `dagster dev` and `dg dev` read it (its values win
over the shell's). `demo` and `generate` write `DE_ASSETS_START_DATE` (the first generated day,
unless the partitions already start earlier) and `DAGSTER_HOME` there when neither sets them, so the
UI started from the same folder shows the same instance and partitions that start where the data does.
"""

import argparse
import logging
import os
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from de_assets.lib import paths
from de_assets.lib.days import days_between, range_label, short_label, utc_now, utc_today

DOTENV = Path(".env")
MIN_REPETITIONS = 3  # de_assets/lib/config_experiment.py names no winner with fewer


def _load_dotenv(path: Path = DOTENV) -> dict[str, str]:
    """Export the variables of `.env` (working directory) like `dagster dev` does: they win over the
    shell's. Returns what was loaded. `DE_ASSETS_DOTENV=off` skips it (the test suite sets it, so a
    demo's `.env` in the checkout never reaches a test)."""
    if not path.is_file() or os.getenv("DE_ASSETS_DOTENV", "on").strip().lower() == "off":
        return {}
    from dotenv import dotenv_values

    loaded = {k: v for k, v in dotenv_values(path).items() if v is not None}
    os.environ.update(loaded)
    return loaded


def _cover_in_dotenv(first: date, path: Path = DOTENV) -> None:
    """Make the partitions the UI shows start where generated data starts, and point the UI at the
    CLI's instance: write `DE_ASSETS_START_DATE=<first>` into `.env` unless the partitions already
    start on or before `first` (from `.env` or the shell), and `DAGSTER_HOME` when nothing sets it."""
    from dotenv import dotenv_values, set_key

    in_file = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    current = in_file.get("DE_ASSETS_START_DATE") or os.environ.get("DE_ASSETS_START_DATE")
    try:
        covered = current is not None and date.fromisoformat(current) <= first
    except ValueError:  # a malformed value is the user's: leave it, the run will name it
        covered = True
    if not path.exists():
        path.write_text("# Read by `dagster dev`, `dg dev` and `de-assets` started in this folder (values win over\n"
                        "# the shell's). Written by `de-assets demo`/`generate`; edit freely.\n")
    if not covered and ("DE_ASSETS_START_DATE" in in_file or "DE_ASSETS_START_DATE" not in os.environ):
        set_key(path, "DE_ASSETS_START_DATE", first.isoformat(), quote_mode="never")
        os.environ["DE_ASSETS_START_DATE"] = first.isoformat()
        print(f"partitions start on {first} (DE_ASSETS_START_DATE in {path}; the first generated day)")
    if "DAGSTER_HOME" not in in_file and not os.environ.get("DAGSTER_HOME"):
        home = paths.DAGSTER_HOME.resolve()
        set_key(path, "DAGSTER_HOME", str(home), quote_mode="never")
        print(f"DAGSTER_HOME={home} written to {path}: `dagster dev` started here shows the CLI's runs")


def _prepare_instance() -> None:
    """$DAGSTER_HOME (default data/dagster_home) with the dev dagster.yaml, created once even when
    several commands start together; runs of killed processes are marked failed first."""
    from de_assets.instance import prepare

    _, failed = prepare(paths.DAGSTER_HOME)
    for run_id in failed:
        print(f"run {run_id} was still marked running but its process is gone: marked as failed")


def _yesterday() -> date:
    return utc_today() - timedelta(days=1)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD") from None


def _range_error(start: date, end: date) -> str | None:
    """Why [start, end] cannot be run (checked before any run starts), or None."""
    from de_assets.partitions import daily

    first = date.fromisoformat(daily.get_first_partition_key())
    last = date.fromisoformat(daily.get_last_partition_key())
    if end < start:
        return f"--end {end} is before --start {start}"
    if start < first:
        where = f" in {DOTENV}" if "DE_ASSETS_START_DATE" in _dotenv_keys() else ""
        return (f"--start {start} is before the first partition {first} (DE_ASSETS_START_DATE{where}; set it "
                "earlier to load older history)")
    if end > last:
        return (f"--end {end} is after the last partition {last} (yesterday, UTC: a day is processed "
                "once it is over)")
    return None


def _dotenv_values() -> dict[str, str]:
    if not DOTENV.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(DOTENV).items() if v is not None}


def _dotenv_keys() -> set[str]:
    return set(_dotenv_values())


def _spans(days: list[date]) -> str:
    """'2026-11-01..2026-11-03, 2026-11-05' for consecutive runs of days."""
    runs: list[list[date]] = []
    for day in days:
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(short_label(r[0], r[-1]) for r in runs)


def _days_without_data(landing_root: str, start: date, end: date) -> list[date]:
    """Arrival days of [start, end] with no landed file of a known format (any source) and none
    ingested before (files may be deleted from the landing area once ingested)."""
    from de_assets.lib import landing
    from de_assets.sensors import LANDING_SOURCES

    days = days_between(start, end)
    if Path(landing_root).is_dir():
        empty = [d for d in days if not any(
            f.format for source in LANDING_SOURCES for f in landing.list_files(landing_root, source, d))]
    else:
        empty = days
    if empty:
        known = _days_registered(start, end)
        empty = [d for d in empty if d not in known]
    return empty


def _days_registered(start: date, end: date) -> set[date]:
    """Arrival days of [start, end] with a file in the registry, held in the catalog database (never
    waits for a run); from the warehouse file while an earlier version's registry is not moved out of
    it yet; none before anything was ingested."""
    import duckdb
    import sqlalchemy as sa

    from de_assets import lake
    from de_assets.lib import ops_store
    from de_assets.lib.tables import SOURCE_FILES

    try:
        engine = ops_store.ensure(lake.catalog().engine)
        if SOURCE_FILES.name not in ops_store.to_adopt(engine):
            held = ops_store.SOURCE_FILES
            with engine.connect() as c:
                return set(c.execute(sa.select(held.c.arrival_date).distinct()
                                     .where(held.c.arrival_date.between(start, end))).scalars())
    except FileNotFoundError:  # no lake yet
        pass
    database = paths.database()
    if not Path(database).is_file():
        return set()
    try:
        with duckdb.connect(database, read_only=True) as con:
            return {d for (d,) in con.execute(
                f"SELECT DISTINCT arrival_date FROM {SOURCE_FILES.name} WHERE arrival_date BETWEEN ? AND ?",
                [start, end]).fetchall()}
    except duckdb.Error:  # no registry yet, or another process holds the write lock
        return set()


class _StepProgress(logging.Handler):
    """One line per finished step (with its duration) and every warning or error, instead of
    Dagster's DEBUG event log; the run's full log stays in the Dagster instance (UI: Runs)."""

    def __init__(self, total: int):
        super().__init__(logging.DEBUG)
        self.total, self.done, self.started = total, 0, time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        elapsed = f"{time.perf_counter() - self.started:6.1f}s"
        if event is not None:
            kind = event.event_type_value
            if kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
                self.done += 1
                word = {"STEP_SUCCESS": "done", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped"}[kind]
                took = getattr(event.event_specific_data, "duration_ms", None)
                took = f" in {took / 1000:.1f}s" if took is not None else ""
                print(f"  [{self.done:>2}/{self.total}] {elapsed} {event.step_key} {word}{took}", flush=True)
            return
        message = meta.get("orig_message", record.getMessage())
        if message.startswith("Dependencies for step"):  # Dagster's way of saying "skipped: upstream failed"
            self.done += 1
            print(f"  [{self.done:>2}/{self.total}] {elapsed} {meta.get('step_key')} skipped (upstream failed)",
                  flush=True)
        elif record.levelno >= logging.WARNING:
            step = meta.get("step_key") or meta.get("job_name") or "run"
            print(f"  {logging.getLevelName(record.levelno)} {step}: {message}",
                  file=sys.stderr, flush=True)


def _execute(defs, name: str, instance, run_config: dict | None = None, tags: dict | None = None,
             verbose: bool = False):
    """Execute job `name` in process (raise_on_error=False), logging one line per step through
    `_StepProgress`, or Dagster's console log (DEBUG) with `verbose`."""
    import dagster as dg

    job = defs.resolve_job_def(name)
    run_config = dict(run_config or {})
    if not verbose:
        total = len(job.graph.node_dict)

        @dg.logger(description="de-assets CLI: one line per step, warnings and errors")
        def progress(_init_context):
            out = logging.Logger(f"de_assets.cli.{name}", level=logging.DEBUG)
            out.addHandler(_StepProgress(total))
            return out

        job = job.with_logger_defs({"progress": progress})
        run_config["loggers"] = {"progress": {}}  # a job's loggers run only when configured
    dagster_log = logging.getLogger("dagster")  # Dagster's own python logs: warnings only, unless verbose
    level = dagster_log.level
    if not verbose:
        dagster_log.setLevel(logging.WARNING)
    try:
        return job.execute_in_process(instance=instance, run_config=run_config, tags=tags, raise_on_error=False)
    finally:
        dagster_log.setLevel(level)


def _failure_reason(result, node: str) -> str:
    """Why op `node` of a failed in-process run failed: its `dg.Failure` description, else the error."""
    failure = result.failure_data_for_node(node)
    if failure and failure.user_failure_data:
        return failure.user_failure_data.description
    return failure.error.message if failure and failure.error else "see the run's logs"


def cmd_generate(args) -> dict:
    from de_assets.generator import generate

    start = args.end - timedelta(days=args.days - 1)
    started = time.perf_counter()

    def progress(day: date, counts: dict) -> None:
        done = (day - start).days + 1
        print(f"  [{done}/{args.days}] {day}: {counts['events']['rows']:,} event rows, "
              f"{counts['requests']['rows']:,} request rows ({time.perf_counter() - started:.1f}s)", flush=True)

    print(f"generating {args.days} days x {args.events_per_day:,} events into {args.landing}/", flush=True)
    summary = generate(args.landing, start, args.days, args.events_per_day, seed=args.seed, progress=progress)
    _cover_in_dotenv(start)
    print(f"wrote {args.days} days ({start}..{args.end}) of sample data to {args.landing}/ "
          f"in {time.perf_counter() - started:.1f}s")
    return summary


def cmd_run(args) -> bool:
    import dagster as dg

    from de_assets.definitions import build_defs
    from de_assets.instance import process_tags
    from de_assets.partitions import partition_range_tags
    from de_assets.resources import build_resources

    empty = _days_without_data(str(args.landing), args.start, args.end)
    if len(empty) == (args.end - args.start).days + 1:
        print(f"no data landed for {args.start}..{args.end}: no file under {args.landing}/<source>/<day>/ "
              "(sources: events, requests) and none ingested before. Nothing was run, nothing is served.",
              file=sys.stderr)
        return False
    _prepare_instance()
    started = time.perf_counter()
    dry_run = getattr(args, "dry_run", False)
    print(f"daily_pipeline {args.start}..{args.end}: running (one line per step; --verbose for the full log)",
          flush=True)
    # A dry run is not recorded in the Dagster instance either: it must not look like a materialization.
    with (dg.DagsterInstance.ephemeral() if dry_run else dg.DagsterInstance.get()) as instance:
        result = _execute(
            build_defs(build_resources(landing_root=str(args.landing))), "daily_pipeline", instance,
            tags={**partition_range_tags(str(args.start), str(args.end)), **process_tags()},
            run_config={"resources": {"run_mode": {"config": {"dry_run": dry_run}}}},
            verbose=getattr(args, "verbose", False),
        )
    seconds = time.perf_counter() - started
    print(f"\n{'DRY RUN: nothing was written. ' if dry_run else ''}daily_pipeline {args.start}..{args.end}: "
          f"{'SUCCESS' if result.success else 'FAILED'} in {seconds:.1f}s (run {result.run_id})")
    _print_summary(result)
    if empty:
        print(f"\nno data landed for {_spans(empty)} (no file under {args.landing}/<source>/<day>/): those "
              "arrival days added nothing; their marts hold only events that arrived on other days.")
    return result.success


_SUMMED = ("dagster/row_count", "rows_quarantined", "rows_duplicate", "rows_duplicate_conflicting", "rows_held_back")


def _print_summary(result) -> None:
    import dagster as dg

    from de_assets.metadata import DRY_RUN, WEEK

    # A range run records one materialization per partition, each with that day's figures: add them up
    # (a weekly table's days each show their week's rows: counted once per week).
    rows: dict[str, dict] = {}
    weeks: set[tuple[str, str]] = set()
    for event in result.get_asset_materialization_events():
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        key = event.asset_key.to_user_string()
        total = rows.setdefault(key, {})
        if WEEK in meta:
            if (key, meta[WEEK]) in weeks:
                meta.pop("dagster/row_count", None)
            weeks.add((key, meta[WEEK]))
        for k, v in meta.items():
            summed = k in _SUMMED and isinstance(v, int) and isinstance(total.get(k), int)
            total[k] = total[k] + v if summed else v
    for key, meta in rows.items():
        if "dagster/row_count" not in meta:  # a file, not a table (the insights report)
            print(f"  {key:<32} {meta.get('path', '')}")
            continue
        line = f"  {key:<32} {meta['dagster/row_count']:>10,} rows"
        if "rows_quarantined" in meta:
            line += f", {meta['rows_quarantined']:,} quarantined, {meta['rows_duplicate']:,} duplicate"
            if meta.get("rows_duplicate_conflicting"):
                line += f" ({meta['rows_duplicate_conflicting']:,} conflicting)"
            if meta.get("rows_held_back"):  # their day was held back by the gate: in quarantine, not served
                line += f", {meta['rows_held_back']:,} held back (in quarantine)"
        if meta.get(DRY_RUN):
            line += f"  | stored {meta['stored_rows']:,}, diff {meta['row_diff']:+,}"
            if "rows_added_or_changed" in meta:
                line += f" ({meta['rows_added_or_changed']:,} new/changed, {meta['rows_removed_or_changed']:,} replaced)"
        print(line)
    for check in {(c.asset_key, c.check_name): c for c in result.get_asset_check_evaluations()}.values():
        status = "passed" if check.passed else ("WARNING" if check.severity == dg.AssetCheckSeverity.WARN else "FAILED")
        print(f"  check {check.asset_key.to_user_string()}:{check.check_name} {status}")
    database = paths.database()
    print(f"\nwarehouse: {database}")
    print("query:     de-assets sql \"FROM marts.daily_engagement ORDER BY event_date\"   (the served tables; "
          "never waits for a run)")
    reports = Path(paths.reports()) / "latest.html"
    if reports.exists():
        print(f"report:    {reports}  (open in a browser; works offline)")
    home = os.environ["DAGSTER_HOME"]
    if _dotenv_values().get("DAGSTER_HOME") == home:  # `dagster dev` / `dg dev` started here read it
        print("UI:        dagster dev  (or dg dev; DAGSTER_HOME from .env)   -> http://127.0.0.1:3000")
    else:
        print(f"UI:        DAGSTER_HOME={home} dagster dev   -> http://127.0.0.1:3000")
    print("status:    de-assets status")


def _flags(pairs: list[str]) -> dict[str, str]:
    from de_assets.lib.flags import parse_pairs

    try:
        return parse_pairs(pairs)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def cmd_experiment(args) -> bool:
    import dagster as dg

    from de_assets.definitions import build_defs
    from de_assets.instance import process_tags
    from de_assets.resources import build_resources

    config = {"start": str(args.start), "end": str(args.end), "a": _flags(args.a), "b": _flags(args.b),
              "repetitions": args.reps}  # bad flags stop here, before any state is touched
    _prepare_instance()
    if args.reps < MIN_REPETITIONS:
        print(f"{args.reps} repetition(s) per arm: the experiment measures and checks that both arms serve "
              f"identical tables, but names no winner (that takes at least {MIN_REPETITIONS}: --reps {MIN_REPETITIONS})")
    with dg.DagsterInstance.get() as instance:
        defs = build_defs(build_resources(landing_root=str(args.landing)))
        result = _execute(defs, "pipeline_config_experiment", instance,
                          run_config={"ops": {"pipeline_health__config_experiments": {"config": config}}},
                          tags=process_tags())
    for event in result.get_asset_materialization_events():
        print("\n" + event.materialization.metadata["readout"].value)
    print(f"\npipeline_config_experiment: {'SUCCESS' if result.success else 'FAILED'} (run {result.run_id}); "
          "measurements in pipeline_health.config_experiments")
    return result.success


def cmd_forget_user(args) -> bool:
    """Record the request in the catalog database, erase through Dagster with only the request id, then
    re-serve the affected marts; all in process, so the marts are consistent when this returns.
    The plain id is pseudonymized here: neither it nor the pseudonym reaches Dagster's storage."""
    import logging

    import dagster as dg

    from de_assets.definitions import build_defs
    from de_assets.instance import process_tags
    from de_assets.lib import forget
    from de_assets.lib.privacy import pseudonymize
    from de_assets.lib.tables import FORGET_REQUESTS
    from de_assets.partitions import partition_range_tags
    from de_assets.resources import PipelineSettings, RunMode, Warehouse

    _prepare_instance()
    settings = PipelineSettings(pseudonym_key=os.getenv("DE_ASSETS_PSEUDONYM_KEY"),
                                environment=os.getenv("DE_ASSETS_ENV", "dev"))
    try:
        key = settings.key(logging.getLogger("de_assets"))  # the same key the pipeline uses
    except dg.Failure as error:
        print(f"forget-user: {error.description}", file=sys.stderr)
        return False
    if args.resume:  # an executed request whose lake part failed: the job does that part again
        request_id = args.resume
    elif not (args.user_id and args.requested_by):
        print("forget-user: --user-id and --requested-by are required (or --resume REQUEST_ID)", file=sys.stderr)
        return False
    else:
        # recorded in the catalog database (where the pipeline keeps its requests), the job's warehouse
        warehouse = Warehouse(database=paths.database(), catalog_uri=os.getenv("DE_ASSETS_CATALOG_URI") or None,
                              lake_uri=os.getenv("DE_ASSETS_LAKE") or None, run_mode=RunMode())
        request_id = uuid.uuid4().hex
        with warehouse.held(FORGET_REQUESTS, request_id=request_id) as held:
            forget.record_request(held, pseudonymize(key, args.user_id), args.requested_by,
                                  forget.key_fingerprint(key), utc_now(), request_id=request_id)
            warehouse.hand_back(held, FORGET_REQUESTS, request_id=request_id)
    defs = build_defs()
    config = {"request_id": request_id, "no_match_ok": args.no_match_ok, "caller_refreshes_marts": True}
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("forget_user_job").execute_in_process(
            instance=instance, run_config={"ops": {"forget_user": {"config": config}}}, tags=process_tags(),
            raise_on_error=False,
        )
        if not result.success:
            reason = _failure_reason(result, "forget_user")
            print(f"forget-user FAILED (request {request_id}, run {result.run_id}): {reason}", file=sys.stderr)
            return False
        done = result.output_for_node("forget_user")
        if done["status"] == "suppressed":
            print(f"no row matched; the suppression is recorded (request {request_id}): later ingests drop the user")
        else:
            print(f"forgot the user: {done['rows_deleted']:,} rows deleted (request {request_id}; audit in "
                  "pipeline_health.forget_audit); later ingests drop the user")
        if done["refresh_start"] is None:
            return True
        span = range_label(done['refresh_start'], done['refresh_end'])
        refresh = defs.resolve_job_def("refresh_marts").execute_in_process(
            instance=instance, tags={**partition_range_tags(done["refresh_start"], done["refresh_end"]), **process_tags()},
            raise_on_error=False,
        )
    if not refresh.success:
        print(f"re-serving the marts {span} FAILED (run {refresh.run_id}): the marts still count the user; "
              f"re-run job refresh_marts over {span}", file=sys.stderr)
        return False
    print(f"marts re-served for {span} (run {refresh.run_id})")
    return True


def cmd_rollback(args) -> bool:
    """Run rollback_job in process and print what it restored (or, with --dry-run, would restore)."""
    import dagster as dg

    from de_assets.definitions import build_defs
    from de_assets.instance import process_tags

    if args.end and not args.start:
        print("rollback: --end needs --start", file=sys.stderr)
        return False
    _prepare_instance()
    config = {"to": args.to, "tables": args.table or []}
    if args.start:
        config.update(start=str(args.start), end=str(args.end or args.start))
    run_config = {"ops": {"roll_back_served": {"config": config}},
                  "resources": {"run_mode": {"config": {"dry_run": args.dry_run}}}}
    with (dg.DagsterInstance.ephemeral() if args.dry_run else dg.DagsterInstance.get()) as instance:
        result = _execute(build_defs(), "rollback_job", instance, run_config, tags=process_tags())
        if not result.success:
            reason = _failure_reason(result, "roll_back_served")
            print(f"rollback FAILED (run {result.run_id}): {reason}", file=sys.stderr)
            return False
        restored = result.output_for_node("roll_back_served")
    verb = "would restore" if args.dry_run else "restored"
    print(f"{'DRY RUN: nothing was written. ' if args.dry_run else ''}rollback to {args.to}: {verb} "
          f"{len(restored)} partition(s) (run {result.run_id})")
    for r in restored:
        print(f"  {r['table']:<32} {r['partition']}  {r['rows_before']:>10,} -> {r['rows_after']:,} rows")
    return True


def cmd_sql(args) -> int:
    """Answer from the lake's snapshots (de_assets/lake.py): the pipeline's DuckDB file is never opened."""
    import duckdb

    from de_assets import lake

    try:
        print(lake.query(args.query, args.format, args.as_of))
    except (duckdb.Error, ValueError, FileNotFoundError) as error:
        print(f"de-assets sql: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args) -> bool:
    landing = Path(args.landing)
    first = args.end - timedelta(days=args.days - 1)
    if not (landing / "events" / first.isoformat()).exists():
        cmd_generate(args)
    else:
        print(f"sample data for {first} already in {landing}/ (delete it to regenerate)")
        _cover_in_dotenv(first)
    args.start = first
    error = _range_error(args.start, args.end)
    if error:
        print(f"de-assets demo: {error}", file=sys.stderr)
        return False
    return cmd_run(args)


def cmd_status(args) -> bool:
    """Read-only: no home is created, no run is started, the warehouse is opened read-only."""
    home = os.getenv("DAGSTER_HOME") or str(paths.DAGSTER_HOME)
    if not (Path(home) / "dagster.yaml").is_file():
        where = "DAGSTER_HOME" if os.getenv("DAGSTER_HOME") else "the default instance"
        print(f"no Dagster instance at {home} ({where}): nothing has run yet; `de-assets demo` creates it "
              "and runs the pipeline on sample data", file=sys.stderr)
        return False
    home = str(Path(home).resolve())
    import dagster as dg

    from de_assets import status
    from de_assets.definitions import build_defs

    with dg.DagsterInstance.from_config(home) as instance:
        print(status.render(instance, build_defs(), paths.database(), home))
    return True


# --- the command line -----------------------------------------------------------------------------

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to every option with a default; options whose default is computed
    (None) or a flag say their default in their help text."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.required or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return f"de-assets {of('de_assets')} (dagster {of('dagster')}, duckdb {of('duckdb')})"


def _landing_option(p) -> None:
    p.add_argument("--landing", default=paths.landing(), metavar="DIR",
                   help="landing root: <DIR>/<source>/<YYYY-MM-DD>/<file>; $DE_ASSETS_LANDING sets the default")


def _range_options(p, what: str) -> None:
    p.add_argument("--start", type=_date, required=True, metavar="YYYY-MM-DD", help=f"first {what} (UTC)")
    p.add_argument("--end", type=_date, default=None, metavar="YYYY-MM-DD",
                   help=f"last {what}, inclusive (default: --start)")


def _sample_options(p) -> None:
    p.add_argument("--days", type=int, default=7, help="number of arrival days")
    p.add_argument("--end", type=_date, default=None, metavar="YYYY-MM-DD",
                   help="last arrival day (default: yesterday, UTC)")
    p.add_argument("--events-per-day", type=int, default=20_000, metavar="N", help="events per weekday")
    p.add_argument("--seed", type=int, default=7, help="random seed: same seed, same files")
    _landing_option(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="de-assets", description=__doc__.split("\n")[0],
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func):
        p = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
        p.set_defaults(func=func)
        return p

    p = command("generate", "write sample landing files (events and request logs)", _main_generate)
    _sample_options(p)

    p = command("demo", "generate sample data and materialize every asset for those days", cmd_demo)
    _sample_options(p)
    _verbose_option(p)

    p = command("run", "materialize daily_pipeline for a day range in one run", cmd_run)
    _range_options(p, "partition day")
    _landing_option(p)
    p.add_argument("--dry-run", action="store_true",
                   help="run and validate everything against a scratch copy; the warehouse is not touched")
    _verbose_option(p)

    p = command("experiment", "A/B test two pipeline configurations on the same landed days", cmd_experiment)
    _range_options(p, "arrival day")
    p.add_argument("--a", nargs="*", default=["lake_compression=zstd"], metavar="FLAG=VALUE", help="flags of arm A")
    p.add_argument("--b", nargs="*", default=["lake_compression=snappy"], metavar="FLAG=VALUE", help="flags of arm B")
    p.add_argument("--reps", type=int, default=MIN_REPETITIONS, metavar="N",
                   help=f"repetitions per arm; fewer than {MIN_REPETITIONS} measure but name no winner")
    _landing_option(p)

    p = command("forget-user", "erase one user from every layer (GDPR), with an audit record", cmd_forget_user)
    p.add_argument("--user-id", help="the plain user id (userId or anonymousId); required unless --resume (no default)")
    p.add_argument("--requested-by", help="who asked, for the audit; required unless --resume (no default)")
    p.add_argument("--resume", metavar="REQUEST_ID",
                   help="finish a request whose lake part failed (the failure message names it) instead of "
                        "recording a new one (default: record a new one)")
    p.add_argument("--no-match-ok", action="store_true",
                   help="record the suppression even if no row matches (e.g. re-recording requests after a "
                        "key rotation); without it an id that matches nothing is an error")

    p = command("rollback", "restore the served tables' partitions that changed since an earlier snapshot "
                "(warehouse and lake)", cmd_rollback)
    p.add_argument("--to", required=True, metavar="TIME|SNAPSHOT",
                   help="a UTC time (YYYY-MM-DDTHH:MM:SS) or a snapshot id; `de-assets sql --as-of` shows that state")
    p.add_argument("--start", type=_date, default=None, metavar="YYYY-MM-DD",
                   help="only the partitions a run over --start..--end writes (default: every partition that changed)")
    p.add_argument("--end", type=_date, default=None, metavar="YYYY-MM-DD", help="last day (default: --start)")
    p.add_argument("--table", action="append", metavar="SCHEMA.TABLE",
                   help="only this served table (repeatable; default: every clean, quarantine and marts table)")
    p.add_argument("--dry-run", action="store_true", help="report what would be restored; change nothing")

    p = command("sql", "query the served tables (latest or past snapshot); never waits for a run",
                lambda args: cmd_sql(args) == 0)
    p.add_argument("query", help='SQL over the served tables, e.g. "SELECT * FROM marts.daily_engagement"')
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    p.add_argument("--as-of", default=None,
                   help="read as of a past moment (YYYY-MM-DDTHH:MM:SS, UTC) or a snapshot id (default: latest)")

    command("status", "one screen: newest partitions, latest runs and failed checks, SLOs, open alerts (read-only)",
            cmd_status)
    return parser


def _verbose_option(p) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="print Dagster's full event log (DEBUG) instead of one line per step")


def _main_generate(args) -> bool:
    cmd_generate(args)
    return True


def main(argv: list[str] | None = None) -> int:
    _load_dotenv()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "days", 1) < 1 or getattr(args, "events_per_day", 0) < 0 or getattr(args, "reps", 1) < 1:
        parser.error("--days and --reps must be at least 1, --events-per-day at least 0")
    if args.command in ("generate", "demo"):
        args.end = args.end or _yesterday()
    if args.command in ("run", "experiment"):
        args.end = args.end or args.start
        error = _range_error(args.start, args.end)
        if error:
            parser.error(error)
    return 0 if args.func(args) else 1


if __name__ == "__main__":
    sys.exit(main())
