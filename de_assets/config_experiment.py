"""Runs one arm of a pipeline-configuration experiment (R7) through Dagster: the real
`daily_pipeline` in process on its own DuckDB file under `<warehouse>.experiments/<experiment id>/`
(an isolated warehouse per arm and repetition), with an ephemeral Dagster instance. Stage latency
comes from the arm's own `pipeline_health.partition_kpis`, bytes stored from the files it wrote.

The code location is passed in (``build_defs``): `definitions.build_defs` hands a `PipelineRunner`
to the `pipeline_health/config_experiments` asset as its `pipeline_runner` resource, so this module
never imports `definitions` (no import cycle). The Dagster-free part (alternation, summaries,
identity check, readout) is `lib/config_experiment.py`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import sqlalchemy as sa

from de_assets.lib import forget, ops_store
from de_assets.lib.config_experiment import ArmResult, measure
from de_assets.lib.days import utc_now
from de_assets.lib.tables import FORGET_REQUESTS
from de_assets.partitions import partition_range_tags
from de_assets.resources import build_resources


class PipelineRunner:
    """Runs `daily_pipeline` of the code location ``build_defs(resources)`` for one arm."""

    def __init__(self, build_defs: Callable[[dict], dg.Definitions]) -> None:
        self.build_defs = build_defs

    def run_arm(self, arm: str, flags: dict, repetition: int, start: date, end: date, workdir: Path,
                settings: dict, suppressed: list[tuple] = ()) -> ArmResult:
        """One repetition of one arm: a fresh warehouse, the pipeline over [start, end], the measurements.
        `settings` are the running code location's `PipelineSettings` (landing root, key, gate, funnels);
        only the arm's flags differ. `suppressed` is the warehouse's forget-user suppression list: the
        replay drops forgotten users like any ingest."""
        sandbox = workdir / f"{arm}-{repetition}"  # its warehouse, lake and report pages
        shutil.rmtree(sandbox, ignore_errors=True)
        sandbox.mkdir(parents=True)
        database = sandbox / "warehouse.duckdb"
        reports = str(sandbox / "reports")
        # the arm's own lake too, whatever DE_ASSETS_CATALOG_URI / DE_ASSETS_LAKE say: an arm never publishes
        # to the served lake
        sandboxed = {"reports_root": reports, "catalog_uri": f"sqlite:///{sandbox.resolve() / 'catalog.db'}",
                     "lake_uri": (sandbox.resolve() / "lake").as_uri()}
        if suppressed:  # into the arm's catalog database, where its ingests read the suppression list
            ops = ops_store.ensure(sa.create_engine(sandboxed["catalog_uri"]))
            try:
                with duckdb.connect() as con:
                    ops_store.load(ops, con, FORGET_REQUESTS)
                    forget.seed_suppression(con, suppressed, utc_now())
                    ops_store.replace(ops, FORGET_REQUESTS, con)
            finally:
                ops.dispose()
        defs = self.build_defs(build_resources(str(database), **{**settings, **flags, **sandboxed}))
        started = time.perf_counter()
        with dg.DagsterInstance.ephemeral() as instance:
            result = defs.resolve_job_def("daily_pipeline").execute_in_process(
                instance=instance, tags=partition_range_tags(str(start), str(end)), raise_on_error=False,
            )
        wall = time.perf_counter() - started
        if not result.success:
            raise dg.Failure(f"arm {arm} (repetition {repetition}, flags {flags}) failed: run {result.run_id}")
        ops = sa.create_engine(sandboxed["catalog_uri"])  # the arm's catalog database: its KPI rows
        try:
            metrics, prints = measure(database, wall, ops)
        finally:
            ops.dispose()
        return ArmResult(arm, repetition, metrics, prints)
