#!/usr/bin/env bash
# Main job: a full conformance run on the embedded default lab. Installs what it needs first.
# Extra arguments go to `stdb-conformance run` (e.g. --report-dir DIR, --spacetimedb real).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/bootstrap.sh"
export STDB_RUNBOOK="${STDB_RUNBOOK:-$repo/../shared/runbook/self-hosting.md}"
exec "$repo/.venv/bin/stdb-conformance" run "$@"
