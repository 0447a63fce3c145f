import dagster as dg

# One partition per folder under data/raw/; the raw folder sensor adds new ones.
domain_partitions = dg.DynamicPartitionsDefinition(name="domain")

# Every table is a Delta table partitioned on this column.
DELTA_PARTITION = {"partition_expr": "domain"}
