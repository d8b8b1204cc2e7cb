"""`stdb-conformance judge REPORT_DIR`: recorded runs (docker, vm, ssh; tests/data/recorded-runs) judged again
without a lab give every check the outcome it had live, and the same verdict, findings and root causes."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from harness.cli import main
from harness.judge import judge

RECORDED = Path(__file__).parent / "data" / "recorded-runs"
RUNS = sorted(p.name.removesuffix(".tar.gz") for p in RECORDED.glob("*.tar.gz"))


def _unpack(name: str, into: Path) -> Path:
    with tarfile.open(RECORDED / f"{name}.tar.gz") as tar:
        tar.extractall(into, filter="data")
    return into / name


def test_recorded_runs_ship_as_test_data() -> None:
    assert {"docker", "vm", "ssh"} <= set(RUNS), f"recorded runs in {RECORDED}: {RUNS}"


@pytest.mark.parametrize("name", RUNS)
def test_judge_reproduces_a_recorded_run(name: str, tmp_path: Path) -> None:
    report_dir = _unpack(name, tmp_path)
    recorded = json.loads((report_dir / "conformance.json").read_text())
    done = judge(report_dir, tmp_path / "again")
    again = json.loads((tmp_path / "again" / "conformance.json").read_text())
    outcomes = {c["id"]: c["outcome"] for c in recorded["checks"]}
    assert {c["id"]: c["outcome"] for c in again["checks"]} == outcomes
    assert done.changed == []
    assert again["verdict"] == recorded["verdict"]
    assert sorted(f["id"] for f in again["findings"]) == sorted(f["id"] for f in recorded["findings"])
    assert [(c["step"], sorted(c["explains"])) for c in again["root_causes"]] == \
        [(c["step"], sorted(c["explains"])) for c in recorded["root_causes"]]
    for kind in ("conformance.md", "report.html", "junit.xml"):
        assert (tmp_path / "again" / kind).stat().st_size > 0
    # the judgement is the checks' own: their messages are the recorded ones, not a copy of the verdicts
    messages = {c["id"]: _stable(c["message"]) for c in recorded["checks"] if c["outcome"] == "failed"}
    assert messages and {c["id"]: _stable(c["message"]) for c in again["checks"] if c["id"] in messages} == messages


def _stable(message: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x?", message)  # pytest's rewritten asserts name objects by address


def test_a_fixed_checker_changes_the_outcome_of_an_old_run(tmp_path: Path) -> None:
    """What judging again is for: a changed check, run on an old recording, gives its own verdict."""
    report_dir = _unpack("docker", tmp_path)
    recorded = {c["id"]: c["outcome"] for c in json.loads((report_dir / "conformance.json").read_text())["checks"]}
    assert recorded["firewall.active"] == "failed"
    suites = tmp_path / "suites"
    from harness.paths import SUITES_DIR

    suites.mkdir()
    for source in SUITES_DIR.glob("*.py"):
        text = source.read_text()
        if source.name == "test_firewall.py":  # a "fix" that accepts an inactive firewall
            assert "    assert active, (" in text
            text = text.replace("    assert active, (", "    assert active or 'inactive' in ufw_status, (")
        (suites / source.name).write_text(text)
    done = judge(report_dir, tmp_path / "again", suites_dir=suites)
    assert done.changed == [("firewall.active", "failed", "passed")]


def test_a_dir_without_a_recording_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["judge", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no conformance.json" in err and "Traceback" not in err
    (tmp_path / "conformance.json").write_text(json.dumps({"run_id": "x", "backend": "docker", "profile": "default",
                                                           "runbook": {"path": "r.md", "sha256": "0"}, "checks": []}))
    assert main(["judge", str(tmp_path)]) == 2
    assert "keeps no recording" in capsys.readouterr().err


def _renew_evidence(report_dir: Path) -> tuple[str, list[str]]:
    check = next(c for c in json.loads((report_dir / "conformance.json").read_text())["checks"]
                 if c["id"] == "tls.renew-dry-run")
    return check["outcome"], [e["label"] for e in check["evidence"]]


def test_the_renew_check_takes_the_troubleshooting_dry_run_only_when_it_succeeded(tmp_path: Path) -> None:
    """In the docker recording tls.mozilla-intermediate failed first and its troubleshooting ran the runbook's
    `certbot renew --dry-run` (successfully), with no host-changing check before tls.renew-dry-run: judged again,
    that check shows that run instead of asking the host again. When that run did not succeed (a timer's run
    holding certbot's lock, say), the check runs its own dry run, as it did live."""
    import gzip

    report_dir = _unpack("docker", tmp_path)
    judge(report_dir, tmp_path / "again")
    outcome, labels = _renew_evidence(tmp_path / "again")
    assert outcome == "passed" and len(labels) == 1 and "not run again" in labels[0], labels
    assert "when tls.mozilla-intermediate failed" in labels[0]

    tape = report_dir / "histories" / "tape-tls.jsonl.gz"
    lines = gzip.decompress(tape.read_bytes()).decode().splitlines()
    changed = 0
    for n, line in enumerate(lines):
        entry = json.loads(line)
        value = entry.get("value")
        answer = value.get("$cmd") or {} if isinstance(value, dict) else {}
        if entry.get("p") == "diagnostics.target.run" and "renew --dry-run" in answer.get("command", ""):
            answer.update(exit_status=1, stdout="Another instance of Certbot is already running.\r\n")
            lines[n] = json.dumps(entry)
            changed += 1
    assert changed == 1
    tape.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    judge(report_dir, tmp_path / "busy")
    outcome, labels = _renew_evidence(tmp_path / "busy")
    assert outcome == "passed" and labels == ["a timer-started certbot run holding the lock?",
                                              "certbot renew --dry-run"], labels
