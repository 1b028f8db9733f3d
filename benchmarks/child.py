"""One measurement, in a fresh process (started by benchmarks/run.py; not meant to be run by hand).

    python benchmarks/child.py <task> '<json args>' <result.json>

Tasks: pipeline, reference, pandas, backfill_single, backfill_per_partition, overhead.
Writes {"import_s", "wall_s", "maxrss_kb", ...task details} to result.json. `wall_s` is the measured
work (for Dagster: building the Definitions and the instance, then the run), `import_s` the module
imports before it. The parent also measures the whole process (wall and ru_maxrss via wait4).
"""

import time

T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from datetime import date, timedelta  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


class RssSampler(threading.Thread):
    """Samples this process's RSS (/proc/self/statm) every `interval` s, to attribute memory to
    steps. It can miss spikes shorter than the interval; ru_maxrss stays the authoritative peak."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.samples, self.done = interval, [], threading.Event()

    def run(self) -> None:
        with open("/proc/self/statm") as fh:
            while True:
                fh.seek(0)
                self.samples.append((time.time(), int(fh.read().split()[1]) * PAGE))
                if self.done.wait(self.interval):
                    return

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()

    def peak_mib(self, start: float, end: float) -> float | None:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) / 2**20 if inside else None


def _dagster():
    import dagster as dg

    from de_assets.definitions import build_defs
    from de_assets.resources import build_resources

    return dg, build_defs, build_resources


def _job_and_instance(args):
    """The job, and an ephemeral instance (in-memory event log), or with `dagster_home` the instance
    `de-assets run` uses by default: SQLite storage in that folder (the dev `dagster.yaml`)."""
    dg, build_defs, build_resources = _dagster()
    defs = build_defs(build_resources(args["database"], args["landing"], args["key"]))
    home = args.get("dagster_home")
    if home is None:
        return dg, defs.resolve_job_def("daily_pipeline"), dg.DagsterInstance.ephemeral()
    from pathlib import Path

    from de_assets.instance import render

    Path(home).mkdir(parents=True, exist_ok=True)
    (Path(home) / "dagster.yaml").write_text(render("dev"))
    return dg, defs.resolve_job_def("daily_pipeline"), dg.DagsterInstance.from_config(home)


def _step_peaks(instance, run_id: str, sampler: RssSampler) -> dict:
    """Peak sampled RSS (MiB) between each step's STEP_START and STEP_SUCCESS/FAILURE."""
    starts, peaks = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            peaks[event.step_key] = sampler.peak_mib(starts[event.step_key], record.timestamp)
    return peaks


def _run_summary(result) -> dict:
    """Per step: Dagster's STEP_SUCCESS duration and the asset body's own seconds (each partition's
    materialization carries its share of the step's seconds, so an asset's body is the sum over its
    partitions; a multi-asset reports each asset from the same start: the largest); row counts per
    asset (each partition carries its own count: summed; a partition materialized twice in one run,
    e.g. a repaired day, counts once, with its last figures)."""
    steps: dict[str, float] = {}
    per_partition: dict[tuple[str, str, str | None], tuple[float | None, int | None]] = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_SUCCESS":
            steps[event.step_key] = event.event_specific_data.duration_ms / 1000
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        key = (event.step_key, event.asset_key.to_user_string(), event.partition)
        per_partition[key] = (float(meta["seconds"].value) if "seconds" in meta else None,
                              int(meta["dagster/row_count"].value) if "dagster/row_count" in meta else None)
    by_asset_seconds: dict[tuple[str, str], float] = {}
    rows: dict[str, int] = {}
    for (step, asset, _), (seconds, count) in per_partition.items():
        if seconds is not None:
            by_asset_seconds[(step, asset)] = by_asset_seconds.get((step, asset), 0.0) + seconds
        if count is not None:
            rows[asset] = rows.get(asset, 0) + count
    body: dict[str, float] = {}
    for (step, _), seconds in by_asset_seconds.items():
        body[step] = max(body.get(step, 0.0), seconds)
    # A run fails the benchmark on a failed blocking check; warnings (drift on sparse days) are counted.
    checks = [(c.asset_key.to_user_string(), c.check_name, bool(c.passed) or c.blocking is False)
              for c in result.get_asset_check_evaluations()]
    warned = sum(1 for c in result.get_asset_check_evaluations() if not c.passed and c.blocking is False)
    return {
        "success": bool(result.success),
        "steps": steps,  # step key -> seconds, in execution order
        "step_body_seconds": body,
        "rows": rows,
        "checks_passed": all(passed for _, _, passed in checks),
        "checks": len(checks),
        "checks_warned": warned,
    }


def task_pipeline(args) -> dict:
    dg, job, instance = _job_and_instance(args)
    with RssSampler() as sampler:
        result = job.execute_in_process(partition_key=args["day"], instance=instance, raise_on_error=False)
    return {**_run_summary(result), "step_peak_rss_mib": _step_peaks(instance, result.run_id, sampler)}


def _stored_clean_events(database: str) -> dict:
    """What the warehouse holds after the run (not what the run's metadata says)."""
    import duckdb

    with duckdb.connect(database, read_only=True) as con:
        rows, ids = con.execute("SELECT count(*), count(DISTINCT message_id) FROM clean.events").fetchone()
    return {"clean_events_rows": rows, "clean_events_distinct_ids": ids}


def task_backfill_single(args) -> dict:
    from de_assets.partitions import partition_range_tags

    dg, job, instance = _job_and_instance(args)
    with RssSampler() as sampler:
        result = job.execute_in_process(
            tags=partition_range_tags(args["start"], args["end"]), instance=instance, raise_on_error=False
        )
    return {**_run_summary(result), "step_peak_rss_mib": _step_peaks(instance, result.run_id, sampler),
            "stored": _stored_clean_events(args["database"])}


def task_backfill_per_partition(args) -> dict:
    dg, job, instance = _job_and_instance(args)
    start = date.fromisoformat(args["start"])
    days = (date.fromisoformat(args["end"]) - start).days + 1
    runs, ok, rows = [], True, {}
    for i in range(days):
        began = time.perf_counter()
        result = job.execute_in_process(
            partition_key=(start + timedelta(days=i)).isoformat(), instance=instance, raise_on_error=False
        )
        runs.append(time.perf_counter() - began)
        summary = _run_summary(result)
        ok = ok and summary["success"] and summary["checks_passed"]
        for key, count in summary["rows"].items():
            rows[key] = rows.get(key, 0) + count
    return {"success": ok, "checks_passed": ok, "run_seconds": runs, "rows": rows,
            "stored": _stored_clean_events(args["database"])}


def task_overhead(args) -> dict:
    dg, job, instance = _job_and_instance(args)
    runs, ok = [], True
    for _ in range(args["runs"]):
        began = time.perf_counter()
        result = job.execute_in_process(partition_key=args["day"], instance=instance, raise_on_error=False)
        runs.append(time.perf_counter() - began)
        ok = ok and result.success
    return {"success": ok, "run_seconds": runs}


def task_reference(args) -> dict:
    import reference

    return {"success": True, **reference.run(args["landing"], args["day"], args["database"], args["key"])}


def task_pandas(args) -> dict:
    import pandas_baseline

    return {"success": True, **pandas_baseline.run(args["landing"], args["day"], args["database"], args["key"])}


TASKS = {
    "pipeline": (task_pipeline, "dagster"),
    "backfill_single": (task_backfill_single, "dagster"),
    "backfill_per_partition": (task_backfill_per_partition, "dagster"),
    "overhead": (task_overhead, "dagster"),
    "reference": (task_reference, "duckdb"),
    "pandas": (task_pandas, "pandas"),
}


def main() -> None:
    task, args, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    func, stack = TASKS[task]
    # Imports are timed apart from the work (a long-lived process would pay them once).
    if stack == "dagster":
        _dagster()
    elif stack == "duckdb":
        import duckdb  # noqa: F401

        import reference  # noqa: F401
    else:
        import pandas  # noqa: F401

        import pandas_baseline  # noqa: F401
    imported = time.perf_counter()
    details = func(args)
    finished = time.perf_counter()
    record = {
        "import_s": imported - T0,
        "wall_s": finished - imported,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vmhwm_kb": _vmhwm_kb(),
        **details,
    }
    with open(out, "w") as fh:
        json.dump(record, fh)


def _vmhwm_kb() -> int | None:
    """Peak RSS of this process image (VmHWM). Unlike ru_maxrss, it does not include the parent's
    RSS inherited at fork time, which made every child look as big as the harness had become."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main()
