#!/usr/bin/env bash
# Set up, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# A real single-node Slurm for the Slurm launcher test, where Debian's packages can be installed
# (root + apt-get); elsewhere that one test is skipped and says why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmd slurmctld slurm-client munge) \
    >/dev/null 2>&1 || echo "could not install Slurm; its test will be skipped"
fi
exec .venv/bin/python -m pytest -q -rs "$@"
