"""The official SpacetimeDB TypeScript SDK (npm `spacetimedb`) and the Node.js that runs it, for lab clients.

The package is installed once with npm into the kit's cache, keyed by its version
(${STDB_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/stdb-conformance}/sdk/spacetimedb-<version>/), so later runs need no
registry. Node.js is this machine's own `node` (20 or newer: 20 and 21 get `--experimental-websocket`, 22+ have
a WebSocket built in); lab containers get both read-only (`/lab/sdk`), so the official client runs on the lab's
remote client and operator machines exactly as an application would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import LabError

SDK_PACKAGE = "spacetimedb"
SDK_VERSION = "2.10.1"  # the 2.x release the kit's client checks were written against
AGENT = Path(__file__).resolve().parent / "agents" / "sdk_client.mjs"
# where a lab container sees the bundle and the node binary
LAB_SDK_DIR = "/lab/sdk"
LAB_NODE = "/lab/sdk-node"


@dataclass(frozen=True)
class SdkBundle:
    directory: Path  # holds node_modules/spacetimedb
    version: str
    node: Path
    node_version: str

    def node_flags(self) -> list[str]:
        return node_flags_for(self.node_version)

    def describe(self) -> str:
        return f"npm {SDK_PACKAGE} {self.version} on Node.js {self.node_version}"


def node_flags_for(node_version: str) -> list[str]:
    """Node 20 and 21 have their WebSocket behind a flag; 22 and later have it on."""
    match = re.match(r"v?(\d+)\.", node_version.strip())
    return ["--experimental-websocket"] if match and int(match.group(1)) < 22 else []


def cache_dir() -> Path:
    from harness.cache import cache_root

    return cache_root() / "sdk"


def _node() -> tuple[Path, str]:
    node = shutil.which("node")
    if node is None:
        raise LabError("the official SDK client needs Node.js 20 or newer, and `node` is not installed",
                       hint="install Node.js 20 or newer (nodejs from your distribution or nodejs.org), then run again")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < 20:
        raise LabError(f"the official SDK client needs Node.js 20 or newer; `node` is {version or 'unknown'}",
                       hint="install Node.js 20 or newer, then run again")
    return Path(node).resolve(), version


def installed(directory: Path) -> str | None:
    package = directory / "node_modules" / SDK_PACKAGE / "package.json"
    try:
        text = package.read_text()
    except OSError:
        return None
    match = re.search(r'"version"\s*:\s*"([^"]+)"', text)
    return match.group(1) if match else None


def ensure_sdk(version: str = SDK_VERSION, *, progress: object = None) -> SdkBundle:
    """The cached bundle, installed with npm the first time (one line of LabError when npm cannot)."""
    node, node_version = _node()
    directory = cache_dir() / f"{SDK_PACKAGE}-{version}"
    if installed(directory) != version:
        npm = shutil.which("npm")
        if npm is None:
            raise LabError("installing the official SDK needs npm, which is not installed",
                           hint="install npm (it comes with Node.js), then run again")
        if callable(progress):
            progress(f"installing npm {SDK_PACKAGE}@{version} into {directory} (once)")
        staging = directory.with_name(directory.name + f".partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "package.json").write_text('{"name": "stdbc-sdk-bundle", "private": true}\n')
        res = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--prefix", str(staging),
                              f"{SDK_PACKAGE}@{version}"], capture_output=True, text=True, timeout=600)
        if res.returncode != 0 or installed(staging) != version:
            shutil.rmtree(staging, ignore_errors=True)
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            raise LabError(f"npm could not install {SDK_PACKAGE}@{version}: {tail[0]}",
                           hint="check npm's registry access (npm config get registry), then run again")
        if directory.exists() and installed(directory) != version:
            shutil.rmtree(directory, ignore_errors=True)
        try:
            staging.rename(directory)
        except OSError:  # another process installed it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
            if installed(directory) != version:
                raise LabError(f"could not place the SDK bundle at {directory}",
                               hint=f"remove {directory} and run again") from None
    return SdkBundle(directory, version, node, node_version)
