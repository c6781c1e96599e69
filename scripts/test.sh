#!/usr/bin/env bash
# The whole suite with every service started for real (what `make test` and CI run).
# Services already running before we start are left running; the ones we start are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHON

started_here=0
if ! scripts/services.sh status >/dev/null 2>&1; then
  started_here=1
fi
cleanup() {
  if [ "$started_here" = 1 ] && [ -z "${KEEP_SERVICES:-}" ]; then
    scripts/services.sh down || true
  fi
}
trap cleanup EXIT

# Lint and type checks first: seconds, and they need no service.
bin=$(dirname "$PYTHON")
"$bin/ruff" check chat presence discovery tests bench
"$bin/mypy"

scripts/services.sh up
"$PYTHON" -m pytest -q -p no:cacheprovider --durations=15 "$@" tests
