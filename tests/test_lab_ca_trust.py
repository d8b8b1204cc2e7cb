"""The lab CA trusted without rehashing every root (harness/lab/services.py TRUST_ONE_CA) leaves exactly what
`update-ca-certificates` leaves: run in the lab's own base image, compared with the tool itself."""

from __future__ import annotations

import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from harness.lab.ca import LabCA
from harness.lab.image import ensure_base_image
from harness.lab.services import LAB_CA_ON_TARGET, TRUST_ONE_CA

pytestmark = pytest.mark.lab

STATE = ("cd /etc/ssl/certs && find . -maxdepth 1 -printf '%p %l\\n' | sort | sha256sum; "
         "sha256sum ca-certificates.crt; openssl verify -CAfile ca-certificates.crt $0 | tail -1")


def _in_image(tag: str, ca: Path, script: str) -> str:
    name = f"stdbc-ca-test-{uuid.uuid4().hex[:8]}"
    try:
        done = subprocess.run(["docker", "run", "--rm", "--name", name, "--label", "stdbc-test=ca-trust",
                               "-v", f"{ca}:/ca.crt:ro", "--entrypoint", "bash", tag, "-c",
                               f"set -e; install -m 0644 /ca.crt {LAB_CA_ON_TARGET}; {script}"],
                              capture_output=True, text=True, timeout=180)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_one_ca_trusted_as_update_ca_certificates_would(tmp_path: Path) -> None:
    tag = ensure_base_image(lambda _line: None).tag
    ca = LabCA(tmp_path / "ca", "catest")
    state = f"bash -c {shlex.quote(STATE)} {LAB_CA_ON_TARGET}"
    by_the_tool = _in_image(tag, ca.cert_path, f"update-ca-certificates >/dev/null; {state}")
    ours = _in_image(tag, ca.cert_path, f"bash -c {shlex.quote(TRUST_ONE_CA)}; {state}; "
                                        f"update-ca-certificates | grep added; {state}")
    lines = ours.splitlines()
    assert lines[-1].endswith(": OK"), ours  # the lab CA verifies against the system bundle
    assert lines[:3] == by_the_tool.splitlines(), "links or bundle differ from what update-ca-certificates makes"
    assert lines[3].startswith("0 added, 0 removed"), ours  # nothing left for the tool itself to do
    assert lines[4:] == lines[:3], "update-ca-certificates changed what the fast path made"
