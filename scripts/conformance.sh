#!/usr/bin/env bash
# Main job: a full conformance run on the embedded default lab, on the vm backend so that every check is
# decided on this machine (reboot and mount persistence need a real kernel; docker reports them
# not-applicable). Installs what it needs first. Extra arguments go to `stdb-conformance run`
# (e.g. --report-dir DIR, --spacetimedb real, or --backend docker for the fast container lab).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/bootstrap.sh"
export STDB_RUNBOOK="${STDB_RUNBOOK:-$repo/../shared/runbook/self-hosting.md}"
exec "$repo/.venv/bin/stdb-conformance" run --backend vm "$@"
