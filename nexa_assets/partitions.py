import dagster as dg

# One partition per folder under data/raw/; the raw folder sensor adds new ones.
domain_partitions = dg.DynamicPartitionsDefinition(name="domain")

# Every table is a Delta table partitioned on this column.
DELTA_PARTITION = {"partition_expr": "domain"}

# A partitioned stage launched where training runs: one domain per run, its rows in a Delta table, the "gpu"
# concurrency pool (one at a time unless the pool's limit is raised).
LAUNCHED = {"partitions_def": domain_partitions, "metadata": DELTA_PARTITION, "pool": "gpu"}
