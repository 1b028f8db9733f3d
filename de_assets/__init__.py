"""de_assets: a user-insights data platform as a Dagster code location (see README.md)."""

import warnings

import dagster as dg

# Single-run backfill policies and partitioned check specs are marked beta/preview in dagster 1.13;
# we rely on them deliberately, so their warnings are noise in every CLI call and test.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
# The per-partition freshness checks are "superseded" by FreshnessPolicy, which is not partition
# aware; we attach both on purpose (see definitions.py), so that warning is noise too.
warnings.filterwarnings("ignore", category=dg.SupersessionWarning)
# pandera's failure-case formatter concatenates empty frames, which pandas 2.x warns about on every
# contract run; it is pandera's internals, not ours, and says nothing about the data.
warnings.filterwarnings("ignore", message="The behavior of DataFrame concatenation with empty", category=FutureWarning)
