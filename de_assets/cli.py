"""`de-assets`: generate sample landing data and run the pipeline through Dagster.

    de-assets demo                      # sample data for the last 7 days + materialize everything
    de-assets generate --days 30 --events-per-day 100000
    de-assets run --start 2026-11-01 --end 2026-11-07
    de-assets run --start 2026-11-01 --dry-run   # compute, validate, report; write nothing
    de-assets experiment --start 2026-11-01 --end 2026-11-03 --b raw_format=parquet --reps 3
    de-assets forget-user --user-id cus_4821 --requested-by dpo@example.org
    de-assets sql "SELECT * FROM marts.daily_engagement" --format csv   # while runs write

Runs execute in process against the Dagster instance in $DAGSTER_HOME (default data/dagster_home,
created with the dev dagster.yaml: de_assets/instance.py), so `dagster dev` with the same
DAGSTER_HOME shows them in the UI.
"""

import argparse
import os
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

DEFAULT_HOME = Path("data/dagster_home")


def _prepare_instance() -> None:
    """$DAGSTER_HOME (default data/dagster_home) with the dev dagster.yaml, created once even when
    several commands start together; runs of killed processes are marked failed first."""
    from de_assets.instance import prepare

    _, failed = prepare(DEFAULT_HOME)
    for run_id in failed:
        print(f"run {run_id} was still marked running but its process is gone: marked as failed")


def _yesterday() -> date:
    return datetime.now(timezone.utc).date() - timedelta(days=1)


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
        return (f"--start {start} is before the first partition {first} (DE_ASSETS_START_DATE; set it "
                "earlier to load older history)")
    if end > last:
        return (f"--end {end} is after the last partition {last} (yesterday, UTC: a day is processed "
                "once it is over)")
    return None


def _spans(days: list[date]) -> str:
    """'2026-11-01..2026-11-03, 2026-11-05' for consecutive runs of days."""
    runs: list[list[date]] = []
    for day in days:
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


def _days_without_data(landing_root: str, start: date, end: date) -> list[date]:
    """Arrival days of [start, end] with no landed file of a known format (any source) and none
    ingested before (files may be deleted from the landing area once ingested)."""
    from de_assets.lib import landing
    from de_assets.partitions import days_between
    from de_assets.sensors import LANDING_SOURCES

    days = days_between(start, end)
    if Path(landing_root).is_dir():
        empty = [d for d in days if not any(
            f.format for source in LANDING_SOURCES for f in landing.list_files(landing_root, source, d))]
    else:
        empty = days
    database = os.getenv("DE_ASSETS_DUCKDB", "data/warehouse.duckdb")
    if empty and Path(database).is_file():
        import duckdb

        try:
            with duckdb.connect(database, read_only=True) as con:
                known = {d for (d,) in con.execute(
                    "SELECT DISTINCT arrival_date FROM raw.source_files WHERE arrival_date BETWEEN ? AND ?",
                    [start, end]).fetchall()}
            empty = [d for d in empty if d not in known]
        except duckdb.Error:  # no registry yet, or another process holds the write lock
            pass
    return empty


def cmd_generate(args) -> dict:
    from de_assets.lib.generator import generate

    start = args.end - timedelta(days=args.days - 1)
    started = time.perf_counter()
    summary = generate(args.landing, start, args.days, args.events_per_day, seed=args.seed)
    print(f"wrote {args.days} days ({start}..{args.end}) of sample data to {args.landing}/ "
          f"in {time.perf_counter() - started:.1f}s")
    return summary


def cmd_run(args) -> bool:
    import dagster as dg

    from de_assets.definitions import build_defs
    from de_assets.instance import process_tags
    from de_assets.partitions import partition_range_tags

    os.environ["DE_ASSETS_LANDING"] = str(args.landing)  # the run reads what was generated
    empty = _days_without_data(str(args.landing), args.start, args.end)
    if len(empty) == (args.end - args.start).days + 1:
        print(f"no data landed for {args.start}..{args.end}: no file under {args.landing}/<source>/<day>/ "
              "(sources: events, requests) and none ingested before. Nothing was run, nothing is served.",
              file=sys.stderr)
        return False
    _prepare_instance()
    started = time.perf_counter()
    dry_run = getattr(args, "dry_run", False)
    # A dry run is not recorded in the Dagster instance either: it must not look like a materialization.
    with (dg.DagsterInstance.ephemeral() if dry_run else dg.DagsterInstance.get()) as instance:
        result = build_defs().resolve_job_def("daily_pipeline").execute_in_process(
            instance=instance,
            tags={**partition_range_tags(str(args.start), str(args.end)), **process_tags()},
            run_config={"resources": {"run_mode": {"config": {"dry_run": dry_run}}}},
            raise_on_error=False,
        )
    seconds = time.perf_counter() - started
    print(f"\n{'DRY RUN: nothing was written. ' if dry_run else ''}daily_pipeline {args.start}..{args.end}: "
          f"{'SUCCESS' if result.success else 'FAILED'} in {seconds:.1f}s (run {result.run_id})")
    _print_summary(result)
    if empty:
        print(f"\nno data landed for {_spans(empty)} (no file under {args.landing}/<source>/<day>/): those "
              "arrival days added nothing; their marts hold only events that arrived on other days.")
    return result.success


def _print_summary(result) -> None:
    import dagster as dg

    # A range run records one materialization per partition, each with that day's own figures:
    # the counts of the range are their sum (the rest, e.g. a dry run's diff, is the run's own).
    rows = {}
    for event in result.get_asset_materialization_events():
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        seen = rows.setdefault(event.asset_key.to_user_string(), {})
        for k, v in meta.items():
            summed = (k == "dagster/row_count" or k.startswith("rows_")) and "_or_changed" not in k  # not the diff
            seen[k] = seen.get(k, 0) + v if summed and isinstance(v, int) and not isinstance(v, bool) else v
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
        if meta.get("dry_run"):
            line += f"  | stored {meta['stored_rows']:,}, diff {meta['row_diff']:+,}"
            if "rows_added_or_changed" in meta:
                line += f" ({meta['rows_added_or_changed']:,} new/changed, {meta['rows_removed_or_changed']:,} replaced)"
        print(line)
    for check in {(c.asset_key, c.check_name): c for c in result.get_asset_check_evaluations()}.values():
        status = "passed" if check.passed else ("WARNING" if check.severity == dg.AssetCheckSeverity.WARN else "FAILED")
        print(f"  check {check.asset_key.to_user_string()}:{check.check_name} {status}")
    database = os.getenv("DE_ASSETS_DUCKDB", "data/warehouse.duckdb")
    print(f"\nwarehouse: {database}")
    print(f"  python -c \"import duckdb; print(duckdb.connect('{database}', read_only=True)"
          f".sql('FROM marts.daily_engagement ORDER BY event_date'))\"")
    reports = Path(os.getenv("DE_ASSETS_REPORTS", "data/reports")) / "latest.html"
    if reports.exists():
        print(f"report:    {reports}  (open in a browser; works offline)")
    print(f"UI:        DAGSTER_HOME={os.environ['DAGSTER_HOME']} dagster dev   -> http://127.0.0.1:3000")


def _flags(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"flag {pair!r}: expected name=value, e.g. raw_format=parquet")
        out[name] = value
    return out


def cmd_experiment(args) -> bool:
    import dagster as dg

    from de_assets.definitions import build_defs
    from de_assets.instance import process_tags

    os.environ["DE_ASSETS_LANDING"] = str(args.landing)
    _prepare_instance()
    config = {"start": str(args.start), "end": str(args.end), "a": _flags(args.a), "b": _flags(args.b),
              "repetitions": args.reps}
    with dg.DagsterInstance.get() as instance:
        result = build_defs().resolve_job_def("pipeline_config_experiment").execute_in_process(
            instance=instance, run_config={"ops": {"pipeline_health__config_experiments": {"config": config}}},
            tags=process_tags(), raise_on_error=False,
        )
    for event in result.get_asset_materialization_events():
        print("\n" + event.materialization.metadata["readout"].value)
    print(f"\npipeline_config_experiment: {'SUCCESS' if result.success else 'FAILED'} (run {result.run_id}); "
          "measurements in pipeline_health.config_experiments")
    return result.success


def cmd_forget_user(args) -> bool:
    """Record the request in the warehouse, erase through Dagster with only the request id, then
    re-serve the affected marts; all in process, so the marts are consistent when this returns.
    The plain id is pseudonymized here: neither it nor the pseudonym reaches Dagster's storage."""
    import logging

    import dagster as dg

    from de_assets.definitions import build_defs
    from de_assets.instance import process_tags
    from de_assets.lib import forget
    from de_assets.lib.privacy import pseudonymize
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
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    warehouse = Warehouse(database=os.getenv("DE_ASSETS_DUCKDB", "data/warehouse.duckdb"), run_mode=RunMode())
    with warehouse.connect() as con:
        request_id = forget.record_request(con, pseudonymize(key, args.user_id), args.requested_by,
                                           forget.key_fingerprint(key), now)
    defs = build_defs()
    config = {"request_id": request_id, "no_match_ok": args.no_match_ok, "caller_refreshes_marts": True}
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("forget_user_job").execute_in_process(
            instance=instance, run_config={"ops": {"forget_user": {"config": config}}}, tags=process_tags(),
            raise_on_error=False,
        )
        if not result.success:
            failure = result.failure_data_for_node("forget_user")
            reason = failure.user_failure_data.description if failure and failure.user_failure_data else (
                failure.error.message if failure and failure.error else "see the run's logs")
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
        span = f"{done['refresh_start']}..{done['refresh_end']}"
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
    args.end = args.end or _yesterday()
    landing = Path(args.landing)
    first = args.end - timedelta(days=args.days - 1)
    if not (landing / "events" / first.isoformat()).exists():
        cmd_generate(args)
    else:
        print(f"sample data for {first} already in {landing}/ (delete it to regenerate)")
    args.start = first
    return cmd_run(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="de-assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p):
        p.add_argument("--landing", default=os.getenv("DE_ASSETS_LANDING", "data/landing"))
        p.add_argument("--days", type=int, default=7)
        p.add_argument("--end", type=_date, default=None, help="last day (default: yesterday, UTC)")
        p.add_argument("--events-per-day", type=int, default=20_000)
        p.add_argument("--seed", type=int, default=7)

    data_options(sub.add_parser("generate", help="write sample landing files"))
    data_options(sub.add_parser("demo", help="generate sample data and materialize every asset"))
    run = sub.add_parser("run", help="materialize daily_pipeline for a day range in one run")
    run.add_argument("--start", type=_date, required=True)
    run.add_argument("--end", type=_date, default=None, help="default: --start")
    run.add_argument("--landing", default=os.getenv("DE_ASSETS_LANDING", "data/landing"))
    run.add_argument("--dry-run", action="store_true",
                     help="run and validate everything against a scratch copy; the warehouse is not touched")

    exp = sub.add_parser("experiment", help="A/B test two pipeline configurations on the same landed days")
    exp.add_argument("--start", type=_date, required=True)
    exp.add_argument("--end", type=_date, default=None, help="default: --start")
    exp.add_argument("--a", nargs="*", default=["raw_format=json"], help="flags of arm A (default raw_format=json)")
    exp.add_argument("--b", nargs="*", default=["raw_format=parquet"], help="flags of arm B (default raw_format=parquet)")
    exp.add_argument("--reps", type=int, default=3, help="repetitions per arm (default 3)")
    exp.add_argument("--landing", default=os.getenv("DE_ASSETS_LANDING", "data/landing"))

    fu = sub.add_parser("forget-user", help="erase one user from every layer (GDPR), with an audit record")
    fu.add_argument("--user-id", required=True, help="the plain user id (userId or anonymousId)")
    fu.add_argument("--requested-by", required=True, help="who asked, for the audit")
    fu.add_argument("--no-match-ok", action="store_true",
                    help="record the suppression even if no row matches (e.g. re-recording requests after a "
                         "key rotation); without it an id that matches nothing is an error")

    sql = sub.add_parser("sql", help="query the served tables (latest or past snapshot); never waits for a run")
    sql.add_argument("query", help='SQL over the served tables, e.g. "SELECT * FROM marts.daily_engagement"')
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    sql.add_argument("--as-of", default=None,
                     help="read as of a past moment (YYYY-MM-DDTHH:MM:SS, UTC) or a snapshot id (default: latest)")

    args = parser.parse_args(argv)
    if args.command == "sql":
        return cmd_sql(args)
    if args.command == "generate":
        args.end = args.end or _yesterday()
        cmd_generate(args)
        return 0
    if args.command in ("run", "experiment"):
        args.end = args.end or args.start
        error = _range_error(args.start, args.end)
        if error:
            parser.error(error)
    if args.command == "run":
        return 0 if cmd_run(args) else 1
    if args.command == "forget-user":
        return 0 if cmd_forget_user(args) else 1
    if args.command == "experiment":
        return 0 if cmd_experiment(args) else 1
    return 0 if cmd_demo(args) else 1


if __name__ == "__main__":
    sys.exit(main())
