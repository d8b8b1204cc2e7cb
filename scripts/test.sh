#!/usr/bin/env bash
# The kit's tests: ruff, mypy, the fast tests (no lab; two workers), then the docker lab integration tests one at
# a time. The vm lab tests (qemu VMs, ~25 minutes under TCG) run only with STDB_WITH_VM=1: they belong to the
# nightly job (docs/ci-nightly.md), not to CI. Installs what it needs first. Extra arguments go to both pytest
# runs (e.g. a test file, or -k NAME). Fails when no test ran at all (pytest's exit 5 is a failure).
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
lab_marks="lab and not vm"
if [ "${STDB_WITH_VM:-0}" = 1 ]; then lab_marks="lab or vm"; fi
.venv/bin/python -m pytest tests -q -rfE -m "$lab_marks" --durations=0 "$@"
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
