import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from de_assets.definitions import build_defs
from de_assets.partitions import partition_range_tags
from de_assets.resources import PipelineSettings, Warehouse

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
TEST_KEY = "test-pseudonym-key"


class Pipeline:
    """A pipeline on a temporary warehouse + landing folder, run through Dagster in process."""

    def __init__(self, tmp_path: Path, landing: Path):
        self.db = tmp_path / "warehouse.duckdb"
        self.landing = landing
        self.instance = dg.DagsterInstance.ephemeral()
        self.defs = build_defs(
            {
                "warehouse": Warehouse(database=str(self.db)),
                "settings": PipelineSettings(landing_root=str(landing), pseudonym_key=TEST_KEY),
            }
        )

    def run(self, start: str, end: str | None = None, selection=None, raise_on_error=True):
        job = self.defs.resolve_job_def("daily_pipeline")
        kwargs = dict(instance=self.instance, raise_on_error=raise_on_error)
        if selection is not None:
            kwargs["asset_selection"] = selection
        if end is None or end == start:
            return job.execute_in_process(partition_key=start, **kwargs)
        return job.execute_in_process(tags=partition_range_tags(start, end), **kwargs)

    def query(self, sql: str, params=None):
        with duckdb.connect(str(self.db), read_only=True) as con:
            con.execute("SET TimeZone = 'UTC'")
            return con.execute(sql, params or []).df()

    def tables(self) -> list[str]:
        return self.query(
            "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables ORDER BY 1"
        )["t"].tolist()


@pytest.fixture
def golden_landing(tmp_path) -> Path:
    target = tmp_path / "landing"
    shutil.copytree(GOLDEN / "landing", target)
    return target


@pytest.fixture
def pipeline(tmp_path, golden_landing) -> Pipeline:
    return Pipeline(tmp_path, golden_landing)
