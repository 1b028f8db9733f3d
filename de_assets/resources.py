"""Resources: the DuckDB warehouse and the pipeline's settings, configured from the environment.

| variable | default | meaning |
|---|---|---|
| `DE_ASSETS_DUCKDB` | `data/warehouse.duckdb` | warehouse file (`:memory:` for throwaway runs) |
| `DE_ASSETS_DUCKDB_MEMORY_LIMIT` | `600MB` | DuckDB buffer pool; larger work spills to disk |
| `DE_ASSETS_LANDING` | `data/landing` | landing root (`<root>/<source>/<YYYY-MM-DD>/<file>`) |
| `DE_ASSETS_ENV` | `dev` | `dev`, or anything else (`prod`, `staging`) for strict mode |
| `DE_ASSETS_PSEUDONYM_KEY` | none | HMAC key for user-id pseudonyms; required outside `dev` |
"""

import os
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from de_assets.lib.marts import DEFAULT_FUNNELS
from de_assets.lib.tables import ensure_tables

DEV_PSEUDONYM_KEY = "de-assets-dev-key-not-for-production"


class Warehouse(DuckDBResource):
    """The DuckDB warehouse. `connect()` yields a UTC connection with every table created.

    `memory_limit` caps DuckDB's buffer pool (it spills to `<database>.tmp/` beyond it); DuckDB's
    own default is 80% of RAM, which makes a run's footprint depend on the machine, not the data.
    Insertion order is not preserved (no table here relies on row order), so big inserts stream.
    """

    memory_limit: str = "600MB"

    @contextmanager
    def connect(self):
        if self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with self.get_connection() as con:
            con.execute(f"SET memory_limit = '{self.memory_limit}'")
            # Row order inside tables carries no meaning here; without it large inserts stream.
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET TimeZone = 'UTC'")
            ensure_tables(con)
            yield con


class PipelineSettings(dg.ConfigurableResource):
    """Where files land, how user ids are pseudonymized, which funnels are served."""

    landing_root: str = "data/landing"
    environment: str = "dev"
    pseudonym_key: str | None = None
    funnels: dict[str, list[str]] = DEFAULT_FUNNELS

    def key(self, log) -> str:
        """The HMAC key; in dev a fixed default with a loud warning, elsewhere an error when missing."""
        if self.pseudonym_key:
            return self.pseudonym_key
        if self.environment == "dev":
            log.warning(
                "DE_ASSETS_PSEUDONYM_KEY is not set: using the PUBLIC dev key. Pseudonyms are NOT "
                "protected. Set DE_ASSETS_PSEUDONYM_KEY (and DE_ASSETS_ENV=prod) for real data."
            )
            return DEV_PSEUDONYM_KEY
        raise dg.Failure(
            f"DE_ASSETS_PSEUDONYM_KEY is not set and DE_ASSETS_ENV={self.environment!r} is not 'dev': "
            "refusing to ingest user ids without a secret pseudonymization key."
        )


def _env(name: str):
    """EnvVar when the variable is set (so secrets stay out of the UI), else None (use the default)."""
    return dg.EnvVar(name) if os.getenv(name) else None


def build_resources() -> dict:
    warehouse = _env("DE_ASSETS_DUCKDB")
    memory_limit = _env("DE_ASSETS_DUCKDB_MEMORY_LIMIT")
    settings = {
        "landing_root": _env("DE_ASSETS_LANDING"),
        "environment": _env("DE_ASSETS_ENV"),
        "pseudonym_key": _env("DE_ASSETS_PSEUDONYM_KEY"),
    }
    return {
        "warehouse": Warehouse(
            database=warehouse or "data/warehouse.duckdb", **({"memory_limit": memory_limit} if memory_limit else {})
        ),
        "settings": PipelineSettings(**{k: v for k, v in settings.items() if v is not None}),
    }
