"""Lab hosts you can keep and point at (converge / verify / destroy).

    stdb-conformance lab up --runbook R [--backend docker|vm] --json   build a lab host, apply the runbook, keep it
    stdb-conformance run <run_args>                                  judge it as an existing host, over ssh
    stdb-conformance lab list / lab down RUN_ID                      see / remove kept labs

`lab up` gives the kit's own ssh key to the host's `ubuntu` user (declared: it is the only change after the
runbook), records the host's ssh key in a known_hosts file of the lab, and writes the CA bundle the vantage
point needs (lab CA + the ACME CA's root). `run_args` then names the target, the URL, the key, the
known_hosts file, the name resolution (the lab's domain -> the target's lab address) and the CA bundle.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.errors import LabError, UsageError
from harness.lab import runs
from harness.run import RunOptions, run

Progress = Callable[[str], None]
KEPT_DIR = runs.REGISTRY / "kept"


def lab_up(options: RunOptions, progress: Progress) -> dict[str, Any]:
    run_id = secrets.token_hex(4)
    code = run(replace(options, keep_lab=True, converge_only=True, run_id=run_id), progress)
    record = runs.owner(run_id)
    if record is None or not record.get("kept"):
        raise LabError(f"lab up: the lab could not be brought up (exit {code}); see the report in "
                       f"{options.report_dir}")
    lab = record["lab"]
    assert isinstance(lab, dict)
    try:
        access = _give_access(run_id, lab, progress)
    except BaseException:
        lab_down(run_id, progress)
        raise
    lab["access"] = access
    runs.keep(run_id, lab)
    site = lab["site"]
    run_args = ["--target", f"ssh://ubuntu@{access['address']}", "--identity-file", access["identity_file"],
                "--known-hosts", access["known_hosts"], "--url", site["url"],
                "--resolve", f"{site['domain']}={site['address']}",
                *(["--ca-file", access["ca_file"]] if access["ca_file"] else []),
                *(["--database", access["database"]] if access["database"] else []),
                "--runbook", lab["runbook"], "--profile", lab["profile"]]
    progress(f"lab up: {run_id} kept ({lab['backend']}); judge it with: stdb-conformance run {' '.join(run_args)}")
    return {"run_id": run_id, "backend": lab["backend"], "apply_exit": code, "run_args": run_args,
            "url": site["url"], "address": access["address"], "report_dir": str(options.report_dir)}


def _give_access(run_id: str, lab: dict[str, Any], progress: Progress) -> dict[str, str]:
    """The kit's key for `ubuntu` on the host, the host's key in a lab known_hosts, the vantage CA bundle."""
    from harness.testbed import Testbed

    testbed = Testbed.from_state(lab["testbed"])
    folder = KEPT_DIR / run_id
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"stdb-conformance-lab-{run_id}",
                    "-f", str(key)], check=True, capture_output=True, timeout=60)
    public = key.with_suffix(".pub").read_text().strip()
    target = testbed.target
    res = target.run("install -d -m 700 -o ubuntu -g ubuntu /home/ubuntu/.ssh && "
                     f"printf '%s\\n' '{public}' >> /home/ubuntu/.ssh/authorized_keys && "
                     "chown ubuntu:ubuntu /home/ubuntu/.ssh/authorized_keys && "
                     "chmod 600 /home/ubuntu/.ssh/authorized_keys", timeout=60)
    if not res.ok:
        raise LabError(f"lab up: cannot give the kit's key to ubuntu on the host: {res.stderr.strip()[-200:]}")
    address = testbed.backend.address()
    known_hosts = folder / "known_hosts"
    scan = ""
    for _try in range(20):  # bounded: sshd answers within seconds of the apply phase
        proc = subprocess.run(["ssh-keyscan", "-T", "5", "-t", "ed25519", address], capture_output=True, text=True,
                              timeout=30)
        scan = proc.stdout.strip()
        if scan:
            break
        time.sleep(1)
    if not scan:
        raise LabError(f"lab up: the host's sshd does not answer on {address}:22")
    known_hosts.write_text(scan + "\n")
    ca_file = folder / "vantage-ca.pem"
    source = Path(lab["site"].get("ca_file") or "")
    if source.is_file() and "BEGIN CERTIFICATE" in source.read_text():
        shutil.copyfile(source, ca_file)
    else:
        ca_file = Path("")
    progress(f"lab up: the kit's ssh key is in ubuntu's authorized_keys on {address}; host key in {known_hosts}")
    database = _probe_database(target, run_id, lab, progress)
    return {"address": address, "database": database, "identity_file": str(key), "known_hosts": str(known_hosts),
            "ca_file": str(ca_file) if ca_file != Path("") else "",
            "adaptation": "the kit's ssh key was added to /home/ubuntu/.ssh/authorized_keys after the runbook"}


class _Commands:
    """The `check` the probe-database helper records into: here the commands just run."""

    def run(self, target: Any, command: str, *, user: str = "root", label: str = "", timeout: float = 60.0) -> Any:
        return target.run(command, user=user, timeout=timeout)


def _probe_database(target: Any, run_id: str, lab: dict[str, Any], progress: Progress) -> str:
    """A database on the kept host for the read-only runs to subscribe to (`--database`), published with the
    kit's probe module (declared; stand-in only: the real server needs a compiled module)."""
    from fixtures.conformance_db import PROBE_DB, ProbeUnavailable, ensure_probe_database
    from harness.run_state import RunState

    state = RunState(run_id=run_id, backend="", workdir="", runbook="", profile="",
                     spacetimedb={"implementation": lab.get("spacetimedb")})
    try:
        ensure_probe_database(target, state, _Commands())
    except (ProbeUnavailable, AssertionError) as exc:
        progress(f"lab up: no probe database ({exc}); runs judge subscriptions only with --database NAME")
        return ""
    progress(f"lab up: probe database {PROBE_DB} published for read-only runs (--database {PROBE_DB})")
    return PROBE_DB


def lab_list() -> list[dict[str, Any]]:
    found = []
    for record in runs.kept():
        lab = record.get("lab") if isinstance(record.get("lab"), dict) else {}
        assert isinstance(lab, dict)
        site = lab.get("site") or {}
        access = lab.get("access") or {}
        found.append({"run_id": record.get("run_id"), "backend": lab.get("backend", ""),
                      "target": f"ssh://ubuntu@{access.get('address', '')}" if access else "",
                      "url": site.get("url", ""), "since": lab.get("since", ""), "runbook": lab.get("runbook", "")})
    return found


def lab_down(run_id: str, progress: Progress) -> None:
    from harness.testbed import Testbed

    record = runs.owner(run_id)
    if record is None or not record.get("kept"):
        known = ", ".join(str(r.get("run_id")) for r in runs.kept()) or "none"
        raise UsageError(f"no kept lab {run_id!r}", hint=f"kept labs: {known} (stdb-conformance lab list)")
    lab = record.get("lab")
    if isinstance(lab, dict) and lab.get("testbed"):
        Testbed.from_state(lab["testbed"]).down()
    shutil.rmtree(KEPT_DIR / run_id, ignore_errors=True)
    runs.unregister(run_id)
    progress(f"lab down: {run_id} removed")


def as_json(value: Any) -> str:
    return json.dumps(value, indent=None)
