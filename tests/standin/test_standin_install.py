"""Release tree, install script, root-dir layout, the `spacetime` proxy and `spacetime version ...`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path

from fixtures.spacetimedb_standin.release import DEFAULT_VERSIONS, build_release_tree
from fixtures.spacetimedb_standin.testing import (
    StandinServer,
    free_port,
    install_with_script,
    run_spacetime,
    serve_release_tree,
    standin_env,
)

LATEST = DEFAULT_VERSIONS[-1]
OLDER = DEFAULT_VERSIONS[0]


def test_release_tree_maps_url_paths_to_files(release_tree: Path) -> None:
    manifest = json.loads((release_tree / "STANDIN.json").read_text())
    assert manifest["standin"] is True and manifest["versions"] == DEFAULT_VERSIONS
    assert manifest["files"]["/"] == "install.sh"
    assert (release_tree / "latest-version").read_text() == f"v{LATEST}\n"
    for path, rel in manifest["files"].items():
        assert (release_tree / rel).is_file(), path
    for version in DEFAULT_VERSIONS:
        assert f"/refs/tags/v{version}/spacetime-x86_64-unknown-linux-gnu.tar.gz" in manifest["files"]
    assert "/releases/latest/download/spacetimedb-update-x86_64-unknown-linux-gnu" in manifest["files"]


def test_binaries_are_zipapps_with_python3_shebang_and_mode_0755(release_tree: Path) -> None:
    updater = release_tree / "releases/latest/download/spacetimedb-update-x86_64-unknown-linux-gnu"
    assert updater.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert stat.S_IMODE(updater.stat().st_mode) == 0o755
    with zipfile.ZipFile(updater) as archive:
        assert "__main__.py" in archive.namelist()
        assert f'VERSION = "{LATEST}"' in archive.read("standin_runtime/buildinfo.py").decode()


def test_install_script_is_posix_sh_and_prints_usage(release_tree: Path) -> None:
    script = release_tree / "install.sh"
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    help_run = subprocess.run(
        ["sh", str(script), "--help"], capture_output=True, text=True, check=False, timeout=30
    )
    assert help_run.returncode == 0 and "--root-dir <ROOT_DIR>" in help_run.stdout


def test_install_script_creates_the_real_layout(installed_template: Path) -> None:
    root = installed_template
    assert os.access(root / "spacetime", os.X_OK)
    assert os.readlink(root / "bin/current") == LATEST
    for binary in ("spacetimedb-cli", "spacetimedb-standalone"):
        path = root / "bin" / LATEST / binary
        assert path.read_bytes().startswith(b"#!/usr/bin/env python3")
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert (root / "config").is_dir() and (root / "data").is_dir()


def test_install_does_not_edit_path_or_shell_rc_files(tmp_path: Path, mirror_url: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "stdb"
    env = standin_env(mirror_url, HOME=str(home))
    command = f"curl -sSf {mirror_url} | sh -s -- --root-dir {root} --yes"
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert list(home.iterdir()) == []
    assert "export PATH=" in result.stderr


def test_install_works_from_a_vanished_working_directory(tmp_path: Path, mirror_url: str) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    root = tmp_path / "stdb"
    command = f"cd {gone} && rmdir {gone} && curl -sSf {mirror_url} | sh -s -- --root-dir {root} --yes"
    result = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env=standin_env(mirror_url),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert os.readlink(root / "bin/current") == LATEST


def test_server_creates_the_real_data_layout(server: StandinServer, database: str) -> None:
    root = server.root
    for rel in (
        "config/cli.toml",
        "config/id_ecdsa",
        "config/id_ecdsa.pub",
        "data/spacetime.pid",
        "data/config.toml",
        "data/metadata.toml",
        "data/control-db",
        "data/program-bytes",
        "data/logs",
    ):
        assert (root / rel).exists(), rel
    assert (root / "data/spacetime.pid").read_text().strip().isdigit()
    assert (root / "config/id_ecdsa").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert 'edition = "standalone"' in (root / "data/metadata.toml").read_text()
    replicas = list((root / "data/replicas").iterdir())
    assert replicas and all((r / "snapshots").is_dir() for r in replicas)
    assert any(p.name.endswith(".stdb.log") for r in replicas for p in (r / "clog").iterdir())


def test_version_strings_show_the_stand_in(fresh_root: Path) -> None:
    result = run_spacetime(fresh_root, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"spacetime {LATEST} (stand-in)"


def test_top_level_install_fails_like_the_real_clap_cli(fresh_root: Path) -> None:
    result = run_spacetime(fresh_root, "install", OLDER)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.endswith(
        "error: unrecognized subcommand 'install'\n\n"
        "  tip: some similar subcommands exist: 'list', 'init'\n\n"
        "Usage: spacetime [OPTIONS] <COMMAND>\n\nFor more information, try '--help'.\n"
    )


def test_spacetime_without_root_dir_looks_in_home_like_the_real_proxy(
    fresh_root: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = standin_env(HOME=str(home))
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("XDG_DATA_HOME", None)
    result = run_spacetime(fresh_root, "server", "list", root_flag=False, env=env)
    assert result.returncode == 1
    assert "It seems like the spacetime version set as current may not exist" in result.stderr
    assert str(home / ".local/share/spacetime/bin/current/spacetimedb-cli") in result.stderr
    cli = fresh_root / "bin" / LATEST / "spacetimedb-cli"
    direct = subprocess.run(
        [str(cli), "server", "list"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert direct.returncode == 0, direct.stderr
    assert (home / ".config/spacetime/cli.toml").exists()


def test_version_list_install_use_uninstall(fresh_root: Path, mirror_url: str) -> None:
    assert run_spacetime(fresh_root, "version", "list").stdout == f"{LATEST} (current)\n"
    result = run_spacetime(fresh_root, "version", "install", OLDER, base_url=mirror_url)
    assert result.returncode == 0, result.stderr
    assert run_spacetime(fresh_root, "version", "list").stdout == f"{LATEST} (current)\n{OLDER}\n"
    assert run_spacetime(fresh_root, "version", "use", OLDER).returncode == 0
    assert os.readlink(fresh_root / "bin/current") == OLDER
    assert run_spacetime(fresh_root, "--version").stdout.strip() == f"spacetime {OLDER} (stand-in)"
    refused = run_spacetime(fresh_root, "version", "uninstall", OLDER, "-y")
    assert refused.returncode == 1 and "cannot uninstall currently used version" in refused.stderr
    assert run_spacetime(fresh_root, "version", "use", LATEST).returncode == 0
    assert run_spacetime(fresh_root, "version", "uninstall", OLDER, "-y").returncode == 0
    assert not (fresh_root / "bin" / OLDER).exists()


def test_version_upgrade_rehearsal_from_older_release(tmp_path: Path) -> None:
    old_tree, new_tree, root = tmp_path / "old", tmp_path / "new", tmp_path / "stdb"
    build_release_tree(old_tree, [OLDER])
    build_release_tree(new_tree, DEFAULT_VERSIONS)
    with serve_release_tree(old_tree) as url:
        assert install_with_script(root, url).returncode == 0
    assert os.readlink(root / "bin/current") == OLDER
    port = free_port()
    server = StandinServer(root, port).start()
    server.stop()
    with serve_release_tree(new_tree) as url:
        result = run_spacetime(root, "version", "upgrade", base_url=url)
    assert result.returncode == 0, result.stderr
    assert os.readlink(root / "bin/current") == LATEST
    with zipfile.ZipFile(root / "spacetime") as archive:
        assert f'VERSION = "{LATEST}"' in archive.read("standin_runtime/buildinfo.py").decode()
    upgraded = StandinServer(root, port).start()
    try:
        assert f"version: {LATEST} (stand-in)" in upgraded.output()
        assert f'version = "{LATEST}"' in (root / "data/metadata.toml").read_text()
    finally:
        upgraded.stop()
