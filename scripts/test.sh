#!/usr/bin/env bash
# The kit's tests: ruff, mypy, the fast tests (no lab; two workers), then the lab integration tests (docker,
# and the vm test when qemu is there) one at a time. Installs what it needs first. Extra arguments go to both
# pytest runs (e.g. a test file, or -k NAME). Fails when no test ran at all (pytest's exit 5 is a failure).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/bootstrap.sh"
export STDB_RUNBOOK="${STDB_RUNBOOK:-$repo/../shared/runbook/self-hosting.md}"
cd "$repo"
.venv/bin/ruff check .
.venv/bin/mypy
started=$(date +%s)
set +e
.venv/bin/python -m pytest tests -q -rfE -m "not lab and not vm" -n 2 "$@"
fast=$?
echo "test.sh: fast tests: exit $fast in $(( $(date +%s) - started ))s" >&2
started=$(date +%s)
.venv/bin/python -m pytest tests -q -rfE -m "lab or vm" --durations=0 "$@"
lab=$?
echo "test.sh: lab tests: exit $lab in $(( $(date +%s) - started ))s" >&2
set -e
if [ "$fast" = 5 ] && [ "$lab" = 5 ]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
for rc in "$fast" "$lab"; do
  if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then exit "$rc"; fi
done
exit 0
