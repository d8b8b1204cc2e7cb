"""Suite `service`: the systemd service the runbook's Steps 1-2 promise.

Promises checked: the unit is the runbook's, enabled and active; SpacetimeDB runs as the dedicated
`spacetimedb` user; it listens on 127.0.0.1:3000 only; /stdb belongs to spacetimedb; Restart=always
brings it back after its main process is killed; ping/health answer on loopback; `spacetime sql`
works on the target. The restart check runs last because it kills the service's main process.

Host state is read through testinfra (the `host` fixture: every query runs through the kit's Target and is
recorded as the check's evidence). Raw commands remain where testinfra has no module: `systemctl show`/`cat`
properties, `find` over a tree, `stat` of a process's working directory, curl, the spacetime CLI, kill.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

import pytest
from testinfra.host import Host

from harness import systemd_unit
from harness.model import Plan, Step, StepKind
from harness.pytest_plugin import CheckRecorder, bounded_wait
from harness.targets.base import Target
from harness.targets.testinfra_bridge import bridge_of, path_owner

# what the checks marked `mutates` change on the host (they run only where the kit may change it)
KILL_CHANGES = "kills the service with SIGKILL"

UNIT_PATH = "/etc/systemd/system/spacetimedb.service"
SERVICE = "spacetimedb"
SERVICE_USER = "spacetimedb"
ROOT_DIR = "/stdb"
PORT = 3000
# what these checks' properties need of the host, as the state trace sees it (harness.blame): the unit's binary
# where its ExecStart names it, and the unit running
SERVER = (f"path:{ROOT_DIR}/spacetime", f"unit:{SERVICE}.service~active")


def _step(plan: Plan, *, path: str | None = None, contains: str | None = None,
          kind: StepKind | None = None) -> Step | None:
    found = plan.find(kind=kind, path=path, contains=contains)
    return found[0] if found else None


def _printed(host: Host, query: Callable[[], object]) -> tuple[object, str]:
    """testinfra's answer to `query` and what the host printed for its first command (testinfra's service
    properties answer True/False; the kit's checks judge the state word itself). An exit status testinfra does
    not expect (`systemctl is-enabled` says `not-found` with 4) is a False answer: the word tells why."""
    with bridge_of(host).capture() as seen:
        try:
            answer = query()
        except (AssertionError, RuntimeError):  # testinfra's run_expect / "Unable to determine state"
            answer = False
    return answer, seen[0].stdout.strip() if seen else ""


def _main_pid(target: Target, check: CheckRecorder) -> int:
    res = check.run(target, f"systemctl show -p MainPID --value {SERVICE}", label="main pid")
    try:
        return int(res.stdout.strip() or 0)
    except ValueError:
        return 0


@pytest.mark.check("service.unit-file-matches-runbook",
                   claim="systemd runs the runbook's unit: its effective User, Group, ExecStart, WorkingDirectory, "
                         "Restart and Environment are the runbook's, loaded from the runbook's path with no drop-in "
                         "the runbook does not write and no edit waiting for a daemon-reload")
def test_unit_file_matches_runbook(target, host, plan: Plan, check: CheckRecorder) -> None:
    step = _step(plan, kind=StepKind.FILE_WRITE, path=UNIT_PATH)
    check.ref(step)
    assert step is not None, f"the runbook has no file write for {UNIT_PATH}"
    drop_ins = [s for s in plan.steps if s.kind is StepKind.FILE_WRITE and (s.path or "").startswith(UNIT_PATH + ".d/")]
    expected_text = "\n".join([step.content, *(d.content for d in drop_ins)])
    check.note("runbook content", step.content.rstrip("\n"))
    # what systemd uses (its own answer, not a file the kit wrote), and where it came from
    shown = check.run(target, systemd_unit.show_command(SERVICE), label="systemd's effective unit (systemctl show)")
    assert shown.ok, f"systemctl show failed (exit {shown.exit_status}): {shown.stderr.strip()[-200:]}"
    effective = systemd_unit.parse_show(shown.stdout)
    problems = [d.describe() for d in systemd_unit.differences(expected_text, effective)]
    if effective.get("LoadState") != "loaded":
        problems.append(f"the unit is {effective.get('LoadState') or 'unknown'} to systemd, not loaded")
    if effective.get("FragmentPath") != UNIT_PATH:
        problems.append(f"systemd loads the unit from {effective.get('FragmentPath') or 'nowhere'}, not {UNIT_PATH}")
    allowed = {d.path for d in drop_ins}
    stray = [p for p in effective.get("DropInPaths", "").split() if p not in allowed]
    if stray:
        problems.append(f"drop-ins the runbook does not write change the unit: {', '.join(stray)}")
    if effective.get("NeedDaemonReload") != "no":
        problems.append("the unit's files changed since systemd loaded them (NeedDaemonReload="
                        f"{effective.get('NeedDaemonReload') or '?'}): what runs is not what is on disk")
    try:
        installed = host.file(UNIT_PATH).content_string.rstrip("\n")  # `cat`; RuntimeError when it fails
    except RuntimeError:
        installed = None
    if installed is None:
        problems.append(f"{UNIT_PATH} is missing on the target")
    elif installed != step.content.rstrip("\n"):
        problems.append(f"{UNIT_PATH} differs from the runbook's unit")
    assert not problems, "; ".join(problems)


@pytest.mark.check("service.unit-enabled", claim="the service starts at boot (enabled)")
def test_unit_enabled(host, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_step(plan, contains=f"systemctl enable {SERVICE}"))
    unit = host.service(SERVICE)
    # is_enabled is `systemctl is-enabled` exiting 0, which `static` or `enabled-runtime` also do: the promise
    # is the word `enabled`
    enabled, state = _printed(host, lambda: unit.is_enabled)
    assert enabled and state == "enabled", f"unit is {state or 'unknown'}, not enabled"
    link = host.file(f"/etc/systemd/system/multi-user.target.wants/{SERVICE}.service")
    assert link.is_symlink or link.exists, "no multi-user.target.wants link"


@pytest.mark.check("service.unit-active", claim="the service is running", needs=SERVER)
def test_unit_active(target, host, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_step(plan, contains=f"systemctl start {SERVICE}"))
    unit = host.service(SERVICE)
    # is_running is `systemctl is-active` exiting 0, which `reloading` also does: the promise is `active`
    running, state = _printed(host, lambda: unit.is_running)
    check.run(target, f"systemctl status --no-pager -n 20 {SERVICE}", label="status")
    assert running and state == "active", f"unit is {state or 'unknown'}, not active"
    # a unit in a crash loop (Restart=always) is "active" for a moment after each fork: it must stay up
    show = f"systemctl show -p MainPID -p NRestarts --value {SERVICE}"
    first = check.run(target, show, label="main pid and restarts")
    later = check.run(target, f"sleep 3; {show}; systemctl is-active {SERVICE}", label="3 s later")
    assert later.stdout.split() == first.stdout.split() + ["active"], \
        f"the unit does not stay up: main pid/restarts {first.stdout.split()} then {later.stdout.split()}"


@pytest.mark.check("service.runs-as-dedicated-user",
                   claim="SpacetimeDB runs as the dedicated spacetimedb user, not root")
def test_runs_as_dedicated_user(target, host, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_step(plan, contains="useradd"))
    pid = _main_pid(target, check)
    assert pid > 0, "the service has no main process"
    # the main process and its children; each one's user is read by pid, testinfra making sure (by start time)
    # it is still the process it listed
    tree = host.process.filter(pid=pid) + host.process.filter(ppid=pid)
    users: set[str] = set()
    for process in tree:
        try:
            users.add(process.user)
        except (AssertionError, RuntimeError):  # it exited since the listing: no longer a service process
            continue
    assert users, f"no process found for main pid {pid}"
    assert users == {SERVICE_USER}, f"service processes run as {sorted(users)}, expected {SERVICE_USER} only"


@pytest.mark.check("service.listens-on-loopback-only",
                   claim="the server listens on 127.0.0.1:3000 and on no other address for port 3000")
def test_listens_on_loopback_only(target, host, remote, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_step(plan, kind=StepKind.FILE_WRITE, path=UNIT_PATH))
    # `ss --numeric --listening`, as tcp://ADDRESS:PORT ("*" listed as both 0.0.0.0 and ::)
    addresses = []
    for spec in host.socket.get_listening_sockets():
        protocol, _, address = spec.partition("://")
        bound, _, port = address.rpartition(":")
        if protocol == "tcp" and port == str(PORT):
            addresses.append(bound)
    assert addresses, f"nothing listens on port {PORT}"
    exposed = [a for a in addresses if a not in ("127.0.0.1",)]
    assert not exposed, f"port {PORT} is also bound on {exposed} (expected 127.0.0.1 only)"
    ip = target.address()
    res = check.run(remote, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{ip}:{PORT}/v1/ping",
                    label="port 3000 from the remote client")
    assert res.stdout.strip() in ("000", ""), f"port {PORT} answers from remote (HTTP {res.stdout.strip()})"


@pytest.mark.check("service.root-dir-owned-by-service-user", claim="/stdb and its contents belong to spacetimedb")
def test_root_dir_owned(target, host, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_step(plan, contains=f"chown -R {SERVICE_USER}:{SERVICE_USER} {ROOT_DIR}"))
    owner = path_owner(host, target, check, ROOT_DIR)
    assert owner is not None, f"{ROOT_DIR} does not exist"
    assert owner == f"{SERVICE_USER}:{SERVICE_USER}", f"{ROOT_DIR} is owned by {owner}"
    res = check.run(target, f"find {ROOT_DIR} -xdev ! -user {SERVICE_USER} -printf '%u\\t%p\\n' | head -20",
                    label="files under /stdb not owned by spacetimedb")
    assert not res.stdout.strip(), "some files under /stdb are not owned by spacetimedb"


@pytest.mark.check("service.answers-on-loopback", claim="ping and health answer on 127.0.0.1:3000", needs=SERVER)
def test_answers_on_loopback(target, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_step(plan, kind=StepKind.FILE_WRITE, path=UNIT_PATH))
    res = check.run(target, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://127.0.0.1:{PORT}/v1/ping",
                    label="GET /v1/ping")
    assert res.stdout.strip() == "200", f"/v1/ping answered {res.stdout.strip() or 'nothing'}"
    res = check.run(target, f"curl -s --max-time 5 http://127.0.0.1:{PORT}/v1/health", label="GET /v1/health")
    assert res.ok and res.stdout.strip().startswith("{"), "/v1/health did not answer JSON"


@pytest.mark.check("service.sql-from-target", claim="`spacetime sql` works from the target", needs=SERVER)
def test_sql_from_target(target, plan: Plan, run_state, check: CheckRecorder) -> None:
    check.ref(_step(plan, contains="spacetime sql") or _step(plan, contains="--root-dir /stdb --yes"))
    from fixtures.conformance_db import ProbeUnavailable, ensure_probe_database

    try:
        database = ensure_probe_database(target, run_state, check)
    except ProbeUnavailable as exc:
        check.not_applicable(str(exc))
        return
    if database.marker is None and not database.table:  # a database the operator named: no table the kit knows
        check.not_applicable(f"the named database {database.name} has no table the kit knows")
    cli = f"sudo -u {SERVICE_USER} {ROOT_DIR}/spacetime --root-dir={ROOT_DIR}"
    query = f"SELECT * FROM {database.table}"
    # `-s local`: the CLI's built-in server entry for 127.0.0.1:3000 (its default server is maincloud)
    res = check.run(target, f"{cli} sql -s local {shlex.quote(database.name)} {shlex.quote(query)}",
                    label="spacetime sql on the target")
    assert res.ok, f"spacetime sql failed (exit {res.exit_status})"
    expected = database.marker or "stdbc-marker-"  # the kit's probe database named: any of the kit's marker rows
    assert expected in res.stdout, f"the row inserted by the kit ({expected}) is not in the output"


@pytest.mark.check("service.serves-current-root-dir", needs=SERVER,
                   claim="the running server works in the /stdb that is mounted now (not a directory a later "
                         "mount hid), and the ExecStart binary exists there")
def test_serves_current_root_dir(target, host, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_step(plan, kind=StepKind.FILE_WRITE, path=UNIT_PATH))
    pid = _main_pid(target, check)
    assert pid > 0, "the service has no main process"
    # as the service's own user: reading another user's /proc/PID/cwd needs CAP_SYS_PTRACE, which a
    # container's root may lack
    probe = (f"sudo -u {SERVICE_USER} stat -L -c '%d:%i' /proc/{pid}/cwd {ROOT_DIR} && "
             f"findmnt -n -o SOURCE,FSTYPE --target {ROOT_DIR}")
    res = check.run(target, probe,
                    label="device:inode of the server's working directory vs /stdb now, and what /stdb is")
    lines = res.stdout.split("\n")
    assert res.ok and len(lines) >= 2 and ":" in lines[1], (
        f"could not stat the server's working directory (exit {res.exit_status}): {res.stderr.strip()[-200:]}")
    assert lines[0] == lines[1], (
        f"the server's working directory ({lines[0]}) is not the current {ROOT_DIR} ({lines[1]}): a later step "
        f"mounted something over {ROOT_DIR} while the server ran; its data and binary are hidden")
    assert host.file(f"{ROOT_DIR}/spacetime").is_executable, \
        f"{ROOT_DIR}/spacetime (the unit's ExecStart) is missing or not executable: a restart would fail"


@pytest.mark.check("service.restart-always", mutates=KILL_CHANGES, needs=SERVER,
                   claim="Restart=always: systemd restarts the server when its main process dies")
def test_restart_always(target, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_step(plan, kind=StepKind.FILE_WRITE, path=UNIT_PATH))
    # a kill -9 is restarted by Restart=on-failure or on-abnormal too: the promise is systemd's `always`
    restart = check.run(target, f"systemctl show -p Restart --value {SERVICE}", label="effective Restart=")
    assert restart.stdout.strip() == "always", \
        f"systemd's effective Restart= is {restart.stdout.strip() or 'unknown'}, not always"
    before = _main_pid(target, check)
    assert before > 0, "the service has no main process to kill"
    check.run(target, f"kill -9 {before}", label="kill -9 the main process")

    seen = {"state": "", "pid": "", "restarts": "", "up": False}

    def settled() -> bool:
        """The server answers again from a new main process, or systemd gave up (unit `failed`): either way stop
        waiting. (A new main process can be `active` for a moment before it fails: only the answer counts.)"""
        res = target.run(f"systemctl show -p MainPID -p NRestarts {SERVICE}; systemctl is-active {SERVICE}",
                         timeout=15)
        lines = res.stdout.strip().splitlines()
        shown = dict(line.split("=", 1) for line in lines if "=" in line)
        seen["pid"], seen["restarts"] = shown.get("MainPID", ""), shown.get("NRestarts", "")
        seen["state"] = lines[-1].strip() if lines and "=" not in lines[-1] else ""
        if seen["state"] == "failed":
            return True
        if seen["pid"] in ("", "0", str(before)) or seen["state"] != "active":
            return False
        seen["up"] = target.run(f"curl -sf --max-time 2 http://127.0.0.1:{PORT}/v1/ping", timeout=10).ok
        return bool(seen["up"])

    bounded_wait(settled, timeout=45, interval=0.5)
    after = _main_pid(target, check)
    check.run(target, f"journalctl -u {SERVICE} --no-pager -n 15", label="journal after the kill")
    if seen["state"] == "failed" and seen["restarts"] not in ("", "0"):
        raise AssertionError(f"systemd restarted the service ({seen['restarts']} restart(s)), but every new process "
                             f"ended and systemd gave up (unit failed; main pid before {before}, now {after}): the "
                             f"journal says why")
    restarted = seen["state"] == "active" and seen["pid"] not in ("", "0", str(before))
    assert seen["up"], (f"systemd restarted the service (main pid {before} -> {seen['pid']}), but it did not answer "
                        f"/v1/ping within 45 s" if restarted else
                        f"systemd did not bring the service back within 45 s (unit {seen['state'] or 'unknown'}; "
                        f"main pid before {before}, now {after})")
