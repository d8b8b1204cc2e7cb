#!/usr/bin/env bash
# Prepare this machine for stdb-conformance: system packages (docker engine, debootstrap, qemu),
# a running docker engine, and a virtualenv (.venv) with the kit installed.
# Idempotent: each part is skipped when already in place. Needs root (or sudo) for the system part.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "run as root, or install sudo"
  SUDO="sudo"
fi

packages=(docker.io debootstrap e2fsprogs util-linux iproute2 curl ca-certificates python3-venv zstd pebble
          qemu-system-x86 qemu-utils openssh-client chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} with your package manager"
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if [ -d /run/systemd/system ] && $SUDO systemctl start docker 2>/dev/null; then
    say "started docker with systemctl"
  else
    say "starting dockerd in the background (log: /var/log/stdb-conformance-dockerd.log)"
    # its own session: a signal to the caller's process group (Ctrl-C, a CI job killed) must not end the engine
    $SUDO setsid sh -c 'nohup dockerd >/var/log/stdb-conformance-dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "docker engine did not start: see /var/log/stdb-conformance-dockerd.log"
fi

if [ ! -x "$repo/.venv/bin/python" ]; then
  say "creating $repo/.venv"
  python3 -m venv "$repo/.venv"
fi
if ! "$repo/.venv/bin/python" -c "import harness, pytest, testinfra" 2>/dev/null \
   || [ "$repo/pyproject.toml" -nt "$repo/.venv/.installed" ] || [ "$repo/constraints.txt" -nt "$repo/.venv/.installed" ]; then
  say "installing the kit into .venv"
  "$repo/.venv/bin/python" -m pip install -q --upgrade pip
  "$repo/.venv/bin/python" -m pip install -q -c "$repo/constraints.txt" -e "$repo[test]"
  touch "$repo/.venv/.installed"
fi

# the official TypeScript SDK (npm `spacetimedb`) the lab's clients run, cached by version outside the repo
if ! "$repo/.venv/bin/python" -c 'import sys
from harness.errors import KitError
from harness.sdk_bundle import ensure_sdk
try:
    bundle = ensure_sdk(progress=lambda m: print("bootstrap: " + m, file=sys.stderr))
except KitError as exc:
    print(f"bootstrap: warning: {exc}", file=sys.stderr)
    sys.exit(1)
print(f"bootstrap: official SDK client: {bundle.describe()}", file=sys.stderr)'; then
  say "the SDK checks will be errors until Node.js 20+ and npm can install the SDK"
fi
