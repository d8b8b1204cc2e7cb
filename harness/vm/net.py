"""VM networking: the lab-bridge NIC (tap device + static systemd-networkd config), MACs, free ports.

Every VM has a user-mode (slirp) NIC for ssh from the host (hostfwd on 127.0.0.1) and for reaching the
package archives. A VM can also sit on the lab's docker bridge through a tap device enslaved to that
bridge, with a static address written into its disk as a systemd-networkd file before boot.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import LabError
from harness.vm.util import run

SLIRP_MAC = "52:54:00:12:34:56"
LAB_NETWORK_FILE = "/etc/systemd/network/10-stdbc-lab.network"
IFNAMSIZ = 15


@dataclass(frozen=True)
class LabNic:
    """Attach the VM to an existing bridge (e.g. the lab's docker network) with a static address."""

    bridge: str  # host bridge interface, e.g. br-0123456789ab
    address: str  # "172.18.0.50/16"
    gateway: str | None = None  # default route through the lab instead of slirp when set
    dns: list[str] = field(default_factory=list)  # resolvers on the lab network (e.g. the lab DNS)

    def __post_init__(self) -> None:
        iface = ipaddress.ip_interface(self.address)
        if iface.network.prefixlen == iface.max_prefixlen:
            raise ValueError(f"lab address {self.address!r} needs a prefix length (e.g. /16)")
        if self.gateway and ipaddress.ip_address(self.gateway) not in iface.network:
            raise ValueError(f"gateway {self.gateway} is not on {iface.network}")

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)


def tap_name(run_id: str, index: int) -> str:
    """Run-labelled tap name within the kernel's 15-character limit: stdbc<run id[:8]>t<index>."""
    name = f"stdbc{run_id[:8]}t{index}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"tap name {name!r} is longer than {IFNAMSIZ} characters")
    return name


def lab_mac(run_id: str, name: str) -> str:
    """A stable locally administered MAC for the VM's lab NIC (qemu's 52:54:00 prefix)."""
    digest = hashlib.sha256(f"{run_id}/{name}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def lab_network_file(nic: LabNic, mac: str) -> str:
    """systemd-networkd config of the lab NIC (matched by MAC, so it wins over the DHCP catch-all)."""
    lines = ["# stdb-conformance: this VM's address on the lab network (written before first boot)",
             "[Match]", f"MACAddress={mac}", "", "[Link]", "RequiredForOnline=yes", "",
             "[Network]", f"Address={nic.address}", "LinkLocalAddressing=no", "IPv6AcceptRA=no"]
    lines += [f"DNS={d}" for d in nic.dns]
    if nic.dns:
        lines.append("Domains=~.")
    if nic.gateway:
        lines += ["", "[Route]", f"Gateway={nic.gateway}", "Metric=100"]
    return "\n".join(lines) + "\n"


def create_tap(name: str, bridge: str) -> None:
    if not Path(f"/sys/class/net/{bridge}/bridge").is_dir():
        raise LabError(f"bridge {bridge} does not exist on this host", hint="pass the lab network's bridge name")
    run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], timeout=15, what=f"create tap {name}")
    run(["ip", "link", "set", name, "master", bridge], timeout=15, what=f"attach {name} to {bridge}")
    run(["ip", "link", "set", name, "up"], timeout=15, what=f"bring {name} up")


def delete_link(name: str) -> bool:
    """Delete a network link if present; True when it was there."""
    if not Path(f"/sys/class/net/{name}").exists():
        return False
    run(["ip", "link", "del", name], timeout=15, what=f"delete {name}", check=False)
    return True


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def docker_bridge_name(network_id: str) -> str:
    """Linux bridge of a docker network created without a custom name option: br-<first 12 of id>."""
    return f"br-{network_id[:12]}"
