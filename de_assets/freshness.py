"""Freshness of the served assets (groups `cleaning` and `analytics`), declared in one place.

* `FreshnessPolicy.time_window` on every served asset: the UI shows it as fresh / warn (newest
  materialization older than 30 h) / fail (48 h). It looks only at the newest materialization.
* Per-partition: `build_time_partition_freshness_checks` fails for an asset whose newest daily
  partition (yesterday) is not there by 06:00 UTC; `build_sensor_for_freshness_checks` evaluates
  them in runs of their own (stopped by default in dev: `DE_ASSETS_FRESHNESS_CHECKS=on`). The
  `stale_partition_alerts` sensor (sensors.py) turns the same condition into alerts, without a run.
"""

from datetime import timedelta

import dagster as dg

from de_assets.assets.layers import SERVED, SERVED_GROUPS
from de_assets.instance import on_outside_dev

POLICY = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=30))
DEADLINE_HOUR_UTC = 6
DEADLINE_CRON = f"0 {DEADLINE_HOUR_UTC} * * *"


def with_policy(spec: dg.AssetSpec) -> dg.AssetSpec:
    """Attach the freshness policy to a served asset's spec (others unchanged)."""
    return spec.replace_attributes(freshness_policy=POLICY) if spec.group_name in SERVED_GROUPS else spec


CHECKS = dg.build_time_partition_freshness_checks(assets=SERVED, deadline_cron=DEADLINE_CRON, timezone="UTC")
# It launches a run whenever checks are due: off by default in dev (DE_ASSETS_FRESHNESS_CHECKS=on).
CHECKS_SENSOR = dg.build_sensor_for_freshness_checks(
    freshness_checks=CHECKS,
    default_status=dg.DefaultSensorStatus.RUNNING if on_outside_dev("DE_ASSETS_FRESHNESS_CHECKS")
    else dg.DefaultSensorStatus.STOPPED,
)
