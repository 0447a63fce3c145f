#!/usr/bin/env bash
# Set up, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Real servers the tests start and stop themselves: a single-node Slurm (the Slurm launcher test) and
# PostgreSQL (instance storage), from Debian's packages where they can be installed (root + apt-get);
# elsewhere those tests are skipped and say why.
missing=()
command -v slurmctld >/dev/null || missing+=(slurmd slurmctld slurm-client munge)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") \
    >/dev/null 2>&1 || echo "could not install ${missing[*]}; the tests that need them will be skipped"
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two workers (NEXA_TEST_WORKERS), a test file per worker so its module fixtures are built once. Each
# worker's torch (and every stage it launches) gets its share of the cores, not a thread per core each.
workers="${NEXA_TEST_WORKERS:-2}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))}"
# Files go to the workers longest first (tests/conftest.py FILE_SECONDS), not by their number of tests.
# Tests marked heavy (minutes each; docs/tests.md lists them and where their paths run) are left out; -m heavy
# runs them.
exec .venv/bin/python -m pytest -q -rs -n "$workers" --dist loadfile --no-loadscope-reorder -m "not heavy" "$@"
