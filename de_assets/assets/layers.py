"""The asset lists the rest of the code location needs, derived in this one place from the asset
definitions themselves (each spec's group and `layer` tag), never kept by hand.

* `DATA_ASSETS`: the data pipeline's assets, landing to reports: each asset module's `ALL` (declared at
  its end, beside its assets; a test checks none is left out). `definitions.py` adds pipeline_health.
* `SERVED`: groups `cleaning` and `analytics`, the assets with a freshness policy and checks (`freshness.py`)
  and stale-partition alerts (`sensors.py`).
* `CLEANED`: layer `clean`, whose materializations the late-data sensor reads.
* `MARTS`: group `analytics` (marts and the report), re-served by the late-data sensor.
* `MEASURED`: layers raw, clean, quarantine and marts, whose steps `pipeline_health.partition_kpis` records.

Keys are in declaration order: module order below, then each multi-asset's specs in the order declared.
"""

import dagster as dg

from de_assets.assets import analytics, cleaning, ingestion

DATA_ASSETS: list[dg.AssetsDefinition | dg.AssetSpec] = [*ingestion.ALL, *cleaning.ALL, *analytics.ALL]

SERVED_GROUPS = ("cleaning", "analytics")


def _specs(asset: dg.AssetsDefinition | dg.AssetSpec) -> list[dg.AssetSpec]:
    return [asset] if isinstance(asset, dg.AssetSpec) else list(asset.specs)


def keys_where(*, groups: tuple[str, ...] = (), layers: tuple[str, ...] = ()) -> list[dg.AssetKey]:
    """Keys of `DATA_ASSETS` in one of `groups` or with a `layer` tag in `layers`, in declaration order."""
    return [spec.key for asset in DATA_ASSETS for spec in _specs(asset)
            if spec.group_name in groups or spec.tags.get("layer") in layers]


SERVED = keys_where(groups=SERVED_GROUPS)
CLEANED = keys_where(layers=("clean",))
MARTS = keys_where(groups=("analytics",))
MEASURED = keys_where(layers=("raw", "clean", "quarantine", "marts"))
