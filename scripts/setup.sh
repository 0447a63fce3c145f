#!/usr/bin/env bash
# Create .venv and install the project with pinned versions (constraints.txt). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch==2.13.0 is pinned: pip takes the local CPU wheel; nothing pulls CUDA packages.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
mkdir -p .dagster_home
[ -f .dagster_home/dagster.yaml ] || cp dagster.yaml .dagster_home/dagster.yaml
