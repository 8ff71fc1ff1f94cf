#!/usr/bin/env bash
# Creates the venv benches/run.py runs the peers from (.bench-venv, git-ignored): DuckDB, and
# the FinOps Foundation's focus_converters pinned so it installs on today's Python packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .bench-venv
.bench-venv/bin/pip install --quiet "duckdb==2.0.1" "focus-converter==1.0.0" "multimethod<1.11" "click<8.2"
.bench-venv/bin/python -c "import duckdb, focus_converter; print('peers ready: duckdb', duckdb.__version__)"
