#!/usr/bin/env bash
# Pack a finished run's recording as test data for tests/test_judge.py: what `stdb-conformance judge` reads
# (conformance.json, transcript.json, runbook.md, histories/) under one top folder NAME.
# Usage: bash scripts/pack-recorded-run.sh REPORT_DIR NAME   -> tests/data/recorded-runs/NAME.tar.gz
set -euo pipefail
src="$1"; name="$2"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for f in conformance.json transcript.json runbook.md histories/lab-state.json; do
  [ -e "$src/$f" ] || { echo "pack-recorded-run: $src/$f is missing: not the report dir of a finished run" >&2; exit 2; }
done
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/$name"
cp -r "$src/conformance.json" "$src/transcript.json" "$src/runbook.md" "$src/histories" "$stage/$name/"
mkdir -p "$repo/tests/data/recorded-runs"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -czf \
  "$repo/tests/data/recorded-runs/$name.tar.gz" "$name"
ls -l "$repo/tests/data/recorded-runs/$name.tar.gz"
