"""What goes into the VM root file system: package lists and config files, hashed into the cache key.

The image imitates a fresh Ubuntu 24.04 cloud server: `ubuntu` user with passwordless sudo,
openssh-server, python3, curl, ca-certificates, nano, ufw installed and inactive, systemd-networkd
(DHCP on the first NIC) and cloud-image-like deb822 apt sources. The archive host is never written
here: it is read back from what debootstrap wrote into ROOT/etc/apt/sources.list.
"""

from __future__ import annotations

import hashlib
import json

from harness.paths import KEYRING_FINGERPRINT

RECIPE_VERSION = 2
SUITE = "noble"
DEBOOTSTRAP_SCRIPT = "/usr/share/debootstrap/scripts/gutsy"
ROOT_DISK_SIZE = "8G"
ROOT_LABEL = "cloudimg-rootfs"
USER = "ubuntu"
USER_UID = 1000

# debootstrap only gets what apt needs to run; apt inside the chroot resolves the rest properly.
DEBOOTSTRAP_INCLUDE = ["ca-certificates", "ubuntu-keyring"]

PACKAGES = [
    "systemd", "systemd-sysv", "systemd-resolved", "systemd-timesyncd", "libpam-systemd", "udev", "dbus",
    "sudo", "openssh-server", "python3", "curl", "ca-certificates", "nano", "ufw", "e2fsprogs", "fdisk",
    "util-linux", "iproute2", "iputils-ping", "netbase", "procps", "less", "kmod", "initramfs-tools",
    "linux-image-virtual",
]

# Drivers the initrd must carry (or the kernel must have built in) to mount root on NVMe.
REQUIRED_DRIVERS = ["nvme", "nvme_core", "virtio_pci", "virtio_net", "virtio_blk", "ext4"]

INITRAMFS_MODULES = "# stdb-conformance: root and data disks are NVMe, NICs virtio\n" + "".join(
    f"{m}\n" for m in ["nvme", "virtio_pci", "virtio_net", "virtio_blk", "ext4"])

SOURCES_LIST_NOTE = "# Ubuntu sources have moved to /etc/apt/sources.list.d/ubuntu.sources\n"

DHCP_NETWORK = """\
# stdb-conformance: like a cloud image, the first NIC gets its address by DHCP.
[Match]
Name=en* eth*

[Network]
DHCP=yes
"""

SUDOERS = f"# Created like cloud-init does for the default user\n{USER} ALL=(ALL) NOPASSWD:ALL\n"

FSTAB = f"LABEL={ROOT_LABEL}\t/\text4\tdiscard,errors=remount-ro\t0 1\n"

# Cloud images regenerate ssh host keys on first boot (cloud-init); this unit does the same. It is ordered
# before ssh.service only: ssh.socket listens early (sockets.target) and the first connection starts
# ssh.service, which waits for the keys. Ordering it before ssh.socket would be a dependency cycle.
HOSTKEYS_UNIT = """\
[Unit]
Description=Generate SSH host keys on first boot (stdb-conformance image)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target ssh.service
"""


def sources_deb822(mirror: str) -> str:
    """The cloud image's /etc/apt/sources.list.d/ubuntu.sources, for the mirror debootstrap used."""
    stanza = ("Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main restricted universe multiverse\n"
              "Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n")
    return (stanza.format(uri=mirror, suites=f"{SUITE} {SUITE}-updates") + "\n"
            + stanza.format(uri=mirror, suites=f"{SUITE}-security"))


def mirror_from_sources_list(text: str) -> str:
    """The archive URI in debootstrap's one-line sources.list (`deb URI SUITE COMPONENTS`)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb":
            uri = parts[1]
            if "[" in uri:  # options block: deb [signed-by=...] URI ...
                uri = next(p for p in parts[1:] if "://" in p)
            return uri
    raise ValueError("no 'deb' line in the root file system's sources.list")


def recipe() -> dict[str, object]:
    """Everything that decides the image's content (hashed into the cache key)."""
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "debootstrap": {"variant": "minbase", "include": DEBOOTSTRAP_INCLUDE, "script": DEBOOTSTRAP_SCRIPT},
        "keyring": KEYRING_FINGERPRINT,
        "packages": PACKAGES,
        "drivers": REQUIRED_DRIVERS,
        "files": {
            "initramfs_modules": INITRAMFS_MODULES, "sources": sources_deb822("MIRROR"),
            "sources_list": SOURCES_LIST_NOTE, "network": DHCP_NETWORK, "sudoers": SUDOERS, "fstab": FSTAB,
            "hostkeys_unit": HOSTKEYS_UNIT, "configure": configure_script(),
        },
        "disk": {"size": ROOT_DISK_SIZE, "label": ROOT_LABEL},
    }


def cache_key(data: dict[str, object] | None = None) -> str:
    blob = json.dumps(recipe() if data is None else data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def configure_script() -> str:
    """Runs in the chroot after the packages are installed (bash, set -eu)."""
    return f"""\
id -u {USER} >/dev/null 2>&1 || useradd --create-home --uid {USER_UID} --shell /bin/bash \\
    --groups adm,sudo,dialout,cdrom,floppy,audio,dip,video,plugdev,netdev --comment Ubuntu {USER} \\
  || useradd --create-home --uid {USER_UID} --shell /bin/bash --groups adm,sudo --comment Ubuntu {USER}
passwd --lock {USER} >/dev/null
install -d -m 0700 -o {USER} -g {USER} /home/{USER}/.ssh
install -m 0600 -o {USER} -g {USER} /dev/null /home/{USER}/.ssh/authorized_keys
chmod 0440 /etc/sudoers.d/90-cloud-init-users
systemctl enable systemd-networkd.service systemd-resolved.service ssh.socket stdbc-ssh-hostkeys.service
systemctl enable ufw.service >/dev/null 2>&1 || true
systemctl mask systemd-firstboot.service >/dev/null 2>&1 || true
echo ubuntu > /etc/hostname
printf '127.0.0.1 localhost\\n127.0.1.1 ubuntu\\n\\n::1 ip6-localhost ip6-loopback\\nff02::1 ip6-allnodes\\n\
ff02::2 ip6-allrouters\\n' > /etc/hosts
grep -q '^ENABLED=no' /etc/ufw/ufw.conf
rm -f /etc/ssh/ssh_host_*
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /tmp/* /var/tmp/*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
"""
