"""Lab test (docker): the mutation self-test. Every docker mutant of harness/selftest/catalogue.toml turns its
named checks red, every baseline is clean and no run shows a red check no mutant explains: detection score
100%, exit 0. This replaces the per-mutant lab tests that once lived in test_lab_service.py and
test_lab_routes_tls.py (the catalogue is where mutants are added now). No run may leave a lab resource. The run
is the session's one docker selftest (tests/conftest.py `docker_selftest`, three lab runs at a time), whose
baseline and mutant reports the single-promise lab tests judge too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab


def test_selftest_docker_detects_every_mutant(docker_selftest: dict[str, Any]) -> None:
    out = docker_selftest["dir"]
    data = docker_selftest["data"]
    stdout = docker_selftest["stdout"]
    undetected = [(m["id"], m["why"]) for m in data["mutants"] if m["status"] != "detected"]
    assert not undetected, undetected
    assert not data["unexpected"], data["unexpected"]
    assert data["score"]["percent"] == 100.0 and data["score"]["total"] >= 22
    assert data["score"]["invalid"] == 0 and data["score"]["missed"] == 0 and data["score"]["not_run"] == 0
    assert data["sentinel"] == {"id": "service-exec-start-missing", "detected": True} and not data["stopped"]
    assert docker_selftest["exit"] == 0, stdout[-3000:]
    if not docker_selftest.get("reused"):
        assert "detection score: " in stdout and "(100%)" in stdout
    assert all(b["clean"] for b in data["baselines"]) and data["baselines"]
    for unit in data["units"]:
        report = json.loads((Path(unit["report"]) / "conformance.json").read_text())
        assert not leftovers(report["run_id"]), unit["id"]
    assert (out / "selftest.md").read_text().count("| detected |") == data["score"]["total"]
    assert all(len(u["members"]) > 0 or u["kind"] == "baseline" for u in data["units"])
