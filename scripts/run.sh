#!/usr/bin/env bash
# Set up, then materialize the whole graph for every sample domain (offline defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DAGSTER_HOME="$PWD/.dagster_home" HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false
exec .venv/bin/nexa-run "$@"
