#!/usr/bin/env bash
# The kit's tests: ruff, mypy, the fast tests, and (when a docker engine runs) the lab integration tests.
# Installs what it needs first. Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/bootstrap.sh"
export STDB_RUNBOOK="${STDB_RUNBOOK:-$repo/../shared/runbook/self-hosting.md}"
cd "$repo"
.venv/bin/ruff check .
.venv/bin/mypy
set +e
.venv/bin/python -m pytest tests -q -rfE "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
