"""The lab's shared services without a lab: what they tell the hosts they serve."""

from __future__ import annotations

from pathlib import Path


def test_a_vm_booting_beside_the_service_containers_gets_every_lab_name(tmp_path: Path) -> None:
    """The VM target's /etc/hosts is written before the mirror and Pebble containers exist (they start side by
    side): the names must come from the lab's options, not from the containers started so far."""
    from harness.lab.services import ACME_HOST, HOST_OCTETS, MIRROR_HOST, LabOptions, LabServices

    services = LabServices("t", LabOptions(mirror_dir=tmp_path, domain="stdb.lab.test"))
    services.s.ips = {role: f"10.0.0.{n}" for role, n in HOST_OCTETS.items()}
    assert not services.s.containers
    names = services.lab_names()
    assert names[MIRROR_HOST] == "10.0.0.30" and names[ACME_HOST] == "10.0.0.40"
    assert names["stdb.lab.test"] == "10.0.0.10"
    real = LabServices("t", LabOptions(mirror_dir=None, domain="stdb.lab.test"))  # --spacetimedb real: no mirror
    real.s.ips = dict(services.s.ips)
    assert MIRROR_HOST not in real.lab_names()
