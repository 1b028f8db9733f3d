"""`de-assets`: generate sample landing data and run the pipeline through Dagster.

    de-assets demo                      # sample data for the last 7 days + materialize everything
    de-assets generate --days 30 --events-per-day 100000
    de-assets run --start 2026-11-01 --end 2026-11-07
    de-assets run --start 2026-11-01 --dry-run   # compute, validate, report; write nothing
    de-assets experiment --start 2026-11-01 --end 2026-11-03 --b raw_format=parquet --reps 3
    de-assets forget-user --user-id cus_4821 --requested-by dpo@example.org

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
    return date.fromisoformat(text)


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
    """Pseudonymize here, so the plain id never reaches the Dagster run storage."""
    import logging

    import dagster as dg

    from de_assets.definitions import build_defs
    from de_assets.instance import process_tags
    from de_assets.lib.privacy import pseudonymize
    from de_assets.resources import PipelineSettings

    _prepare_instance()
    settings = PipelineSettings(pseudonym_key=os.getenv("DE_ASSETS_PSEUDONYM_KEY"),
                                environment=os.getenv("DE_ASSETS_ENV", "dev"))
    key = settings.key(logging.getLogger("de_assets"))  # the same key the pipeline uses
    config = {"pseudonym": pseudonymize(key, args.user_id), "requested_by": args.requested_by}
    with dg.DagsterInstance.get() as instance:
        result = build_defs().resolve_job_def("forget_user_job").execute_in_process(
            instance=instance, run_config={"ops": {"forget_user": {"config": config}}}, tags=process_tags(),
            raise_on_error=False,
        )
    if result.success:
        print(f"forgot the user: {result.output_for_node('forget_user'):,} rows deleted (audit: "
              f"pipeline_health.forget_audit, request {result.run_id}); the late_data_refresh sensor re-serves "
              "the affected marts, or run: dagster job launch -j refresh_marts ...")
    return result.success


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

    args = parser.parse_args(argv)
    if args.command == "generate":
        args.end = args.end or _yesterday()
        cmd_generate(args)
        return 0
    if args.command == "run":
        args.end = args.end or args.start
        return 0 if cmd_run(args) else 1
    if args.command == "forget-user":
        return 0 if cmd_forget_user(args) else 1
    if args.command == "experiment":
        args.end = args.end or args.start
        return 0 if cmd_experiment(args) else 1
    return 0 if cmd_demo(args) else 1


if __name__ == "__main__":
    sys.exit(main())
