"""The Dagster layer. The code location is nexa_assets.definitions (`dagster dev -m nexa_assets.definitions`);
importing this package or any of its stage modules builds no Definitions and touches no storage."""
