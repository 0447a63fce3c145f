"""Great Expectations suites as partitioned asset checks, one per table. The SFT set's check is
blocking: a failing SFT set never reaches training."""

import warnings

import dagster as dg

from nexa_assets.partitions import domain_partitions
from nexa_core.data.quality import SUITES
from resources.delta import DeltaStore

BLOCKING = {"sft_dataset"}

# Partitioned asset checks are a preview feature; they are what keeps a check on one domain.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")


def _suite_check(table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table,
        name=f"{table}_quality",
        partitions_def=domain_partitions,
        blocking=table in BLOCKING,
        description=f"Great Expectations suite for {table}: schema, ids, lengths and rates.",
    )
    def check(context: dg.AssetCheckExecutionContext, delta: DeltaStore) -> dg.AssetCheckResult:
        frame = delta.read_partition(table, context.partition_key)
        result = SUITES[table](frame)
        return dg.AssetCheckResult(
            passed=result.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"partition {context.partition_key}: {result.describe()}",
            metadata={
                "rows": result.rows,
                "failed": result.failures(),
                "expectations": dg.MetadataValue.json(result.outcomes),
            },
        )

    return check


quality_checks = [_suite_check(table) for table in SUITES]
