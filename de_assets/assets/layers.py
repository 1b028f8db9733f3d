"""The asset lists the rest of the code location needs, derived in this one place from the asset
definitions themselves (each spec's group and `layer` tag), never kept by hand.

* `DATA_ASSETS`: the data pipeline's assets, landing to reports: each asset module's `ALL` (declared at
  its end, beside its assets; a test checks none is left out). `definitions.py` adds pipeline_health.
* `SERVED`: groups `cleaning` and `analytics`, the assets with a freshness policy and checks (`freshness.py`)
  and stale-partition alerts (`sensors.py`).
* `CLEANED`: layer `clean`, whose materializations the late-data sensor reads.
* `MARTS`: group `analytics` (marts and the report), re-served by the late-data sensor.
* `MEASURED`: layers raw, clean, quarantine and marts, whose steps `pipeline_health.partition_kpis` records.
* `LATER_READERS`: mart -> the marts that read its earlier days (a time-window partition mapping reaching
  back), and how far; `downstream_marts`: a mart and the marts built from it. Both followed by the
  late-data sensor when an earlier day's mart changes after later days were built.

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


def _later_readers() -> dict[dg.AssetKey, list[tuple[dg.AssetKey, int]]]:
    readers: dict[dg.AssetKey, list[tuple[dg.AssetKey, int]]] = {}
    for asset in DATA_ASSETS:
        for spec in _specs(asset):
            for dep in spec.deps:
                mapping = dep.partition_mapping
                if (spec.key in MARTS and dep.asset_key in MARTS
                        and isinstance(mapping, dg.TimeWindowPartitionMapping) and mapping.start_offset < 0):
                    readers.setdefault(dep.asset_key, []).append((spec.key, -mapping.start_offset))
    return readers


# A mart -> [(a mart whose day d reads this mart's days d - days .. d, days)], from the declared deps.
LATER_READERS = _later_readers()


def _children() -> dict[dg.AssetKey, set[dg.AssetKey]]:
    children: dict[dg.AssetKey, set[dg.AssetKey]] = {}
    for asset in DATA_ASSETS:
        for spec in _specs(asset):
            for dep in spec.deps:
                children.setdefault(dep.asset_key, set()).add(spec.key)
    return children


_CHILDREN = _children()  # asset -> the assets that depend on it


def downstream_marts(key: dg.AssetKey) -> list[dg.AssetKey]:
    """`key` and every mart (group analytics) built from it, in declaration order (an order a run can follow)."""
    found, todo = {key}, [key]
    while todo:
        for child in _CHILDREN.get(todo.pop(), ()):
            if child in MARTS and child not in found:
                found.add(child)
                todo.append(child)
    return [k for k in MARTS if k in found]
