"""The mutation self-test without a lab: the shipped catalogue fits the shipped runbooks, grouping keeps
mutants that could disturb each other apart, the judge reads recorded runs (synthetic conformance.json files
written by a stand-in for `python -m harness run`), shards partition the plan and merge back, and usage
errors are one line with exit 2."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.host_mutants import ADAPTATION_ID, apply_host_mutants, load_host_mutants
from harness.selftest import catalogue as cat
from harness.selftest.catalogue import CatalogueError, Mutant, known_checks, load_catalogue, spans
from harness.selftest.groups import compatible, pack, parse_shard, plan_units, select, shard
from harness.selftest.score import Judgement, judge, load_unit
from harness.targets.base import CommandResult
from tests.conftest import REPO_ROOT, shared_runbook

SELFTEST_DIR = REPO_ROOT / "harness" / "selftest"


# ---------------------------------------------------------------- the shipped catalogue


@pytest.fixture(scope="module")
def shipped() -> cat.Catalogue:
    return load_catalogue()


def _texts(catalogue: cat.Catalogue) -> tuple[dict[str, str], dict[str, Path]]:
    paths = {c.id: catalogue.runbook_path(c, shared_runbook()) for c in catalogue.configs.values()}
    return {cid: p.read_bytes().decode() for cid, p in paths.items()}, paths


def test_shipped_catalogue_size(shipped: cat.Catalogue) -> None:
    docker = [m for m in shipped.mutants if "docker" in m.backends]
    vm = [m for m in shipped.mutants if "vm" in m.backends]
    assert len(docker) >= 22 and len(vm) >= 6, (len(docker), len(vm))
    suites = {known_checks()[c].split(".")[0] for m in docker for c in m.expect_red}
    assert {"service", "routes", "tls", "firewall", "operator", "upgrade", "mounts", "backup_restore"} <= suites


def test_every_runbook_edit_matches_its_shipped_runbook_exactly_once(shipped: cat.Catalogue) -> None:
    texts, paths = _texts(shipped)
    for mutant in shipped.mutants:
        if mutant.kind != "runbook":
            continue
        found = spans(mutant, texts[mutant.config], paths[mutant.config])
        assert len(found) == len(mutant.edits)
        mutated = cat.apply_spans(texts[mutant.config], found)
        assert mutated != texts[mutant.config], f"{mutant.id} changes nothing"


def test_every_check_a_mutant_names_exists_in_a_config_suite(shipped: cat.Catalogue) -> None:
    checks = known_checks()
    for mutant in shipped.mutants:
        config = shipped.configs[mutant.config]
        for check_id in mutant.expect_red + mutant.may_also_fail:
            assert checks[check_id] in config.suites, (mutant.id, check_id)


def test_packaged_copies_of_test_runbooks_and_profile_are_identical() -> None:
    pairs = [(SELFTEST_DIR / "runbooks" / n, REPO_ROOT / "tests" / "runbooks" / n)
             for n in ("volume-before-install.md", "restore-drill.md")]
    pairs.append((SELFTEST_DIR / "profiles" / "service-only.toml",
                  REPO_ROOT / "tests" / "profiles" / "service-only.toml"))
    for packaged, original in pairs:
        if original.exists():  # the vm lab tests still read tests/runbooks/
            assert packaged.read_bytes() == original.read_bytes(), f"{packaged} drifted from {original}"


# The reference runbook is the shared runbook with the defects the kit finds in it fixed. When the shared
# runbook changes, this test says so: update runbooks/self-hosting-reference.md (and the catalogue).
REFERENCE_FIXES = [
    ("            allow 127.0.0.1;\n            deny all;\n        }",
     "            allow 127.0.0.1;\n            deny all;\n            proxy_pass http://localhost:3000;\n"
     "            proxy_http_version 1.1;\n            proxy_set_header Upgrade $http_upgrade;\n"
     "            proxy_set_header Connection \"Upgrade\";\n            proxy_set_header Host $host;\n        }"),
    ("    sudo ufw allow 'Nginx Full'\n    sudo ufw reload\n",
     "    sudo ufw allow 'Nginx Full'\n    sudo ufw allow OpenSSH\n    sudo ufw --force enable\n    sudo ufw reload\n"),
    ("Certbot will automatically configure SSL for Nginx. Restart Nginx",
     "Limit the key exchange groups to the ones Mozilla's intermediate profile allows:\n\n"
     "    echo 'ssl_ecdh_curve X25519:prime256v1:secp384r1;' | sudo tee -a /etc/letsencrypt/options-ssl-nginx.conf\n\n"
     "Certbot will automatically configure SSL for Nginx. Restart Nginx"),
    ("ubuntu@<host>:/home/ubuntu/\n    ssh ubuntu@<host> spacetime publish -s local --bin-path spacetime_module.wasm",
     "ubuntu@<host>:/tmp/\n    ssh ubuntu@<host> sudo -u spacetimedb /stdb/spacetime --root-dir=/stdb publish -s local "
     "--bin-path /tmp/spacetime_module.wasm"),
    ("sudo -u spacetimedb -i -- spacetime --root-dir=/stdb version upgrade",
     "sudo -u spacetimedb /stdb/spacetime --root-dir=/stdb version upgrade"),
    ("sudo -u spacetimedb -i -- spacetime --root-dir=/stdb install <version-number>",
     "sudo -u spacetimedb /stdb/spacetime --root-dir=/stdb version install <version-number> --use"),
]


def test_reference_runbook_is_the_shared_one_with_its_defects_fixed() -> None:
    text = shared_runbook().read_text()
    for old, new in REFERENCE_FIXES:
        assert text.count(old) == 1, f"the shared runbook changed near {old[:60]!r}"
        text = text.replace(old, new)
    assert (SELFTEST_DIR / "runbooks" / "self-hosting-reference.md").read_text() == text


@pytest.mark.parametrize("backend", ["docker", "vm"])
def test_shipped_groups_are_pairwise_compatible_and_cover_every_mutant(shipped: cat.Catalogue, backend: str) -> None:
    texts, paths = _texts(shipped)
    mutants = select(shipped, backend)
    units = plan_units(shipped, mutants, texts, paths)
    again = plan_units(shipped, mutants, texts, paths)
    assert [(u.id, [m.id for m in u.members]) for u in units] == [(u.id, [m.id for m in u.members]) for u in again]
    members = [m.id for u in units for m in u.members]
    assert sorted(members) == sorted(m.id for m in mutants) and len(set(members)) == len(members)
    for unit in units:
        located = {m.id: spans(m, texts[m.config], paths[m.config]) for m in unit.members}
        for i, a in enumerate(unit.members):
            assert a.config == unit.config.id
            for b in unit.members[i + 1:]:
                assert not (a.red_set & b.red_set), (unit.id, a.id, b.id)
                assert compatible(a, b, located[a.id], located[b.id]), (unit.id, a.id, b.id)
        if any(m.exclusive for m in unit.members):
            assert len(unit.members) == 1
    baselines = [u for u in units if not u.members]
    assert {u.config.id for u in baselines} == {m.config for m in mutants}
    assert len(units) < len(mutants) + len(baselines), "no mutants share a run"


def test_selftest_list_shows_the_vm_groups(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--backend", "vm", "--list"]) == 0
    out = capsys.readouterr().out
    assert "backend vm:" in out and "vm-mounts-no-nofail" in out and "drill-wrong-volume" in out
    assert "volume-before-install.baseline" in out and "restore-drill.baseline" in out
    assert "service-user-root" not in out


# ---------------------------------------------------------------- packing on synthetic mutants


def _m(mid: str, expect: tuple[str, ...], may: tuple[str, ...] = (), *, edits: tuple[cat.Edit, ...] = (),
       env: dict[str, str] | None = None, exclusive: bool = False, touches: tuple[str, ...] = ()) -> Mutant:
    return Mutant(id=mid, description=mid, config="c", backends=("docker",), kind="runbook" if edits else "host",
                  expect_red=expect, may_also_fail=may, edits=edits, commands=() if edits else ("true",),
                  env=env or {}, exclusive=exclusive, touches=touches)


def test_pack_keeps_overlapping_checks_text_env_tags_and_exclusive_apart() -> None:
    text = "alpha beta gamma delta"
    mutants = [
        _m("a", ("s.one",)),
        _m("b", ("s.two",), ("s.one",)),  # shares s.one with a
        _m("c", ("s.three",), edits=(cat.Edit(old="beta", new="B"),)),
        _m("d", ("s.four",), edits=(cat.Edit(pattern=r"be(ta)", new="", replacement=r"X\1"),)),  # same text as c
        _m("e", ("s.five",), env={"V": "1"}),
        _m("f", ("s.six",), env={"V": "2"}),
        _m("g", ("s.seven",), exclusive=True),
        _m("h", ("s.eight",), touches=("site",)),
        _m("i", ("s.nine",), touches=("site",)),
    ]
    groups = pack(mutants, text, Path("rb.md"))
    where = {m.id: n for n, g in enumerate(groups) for m in g}
    for x, y in [("a", "b"), ("c", "d"), ("e", "f"), ("h", "i")]:
        assert where[x] != where[y], (x, y, groups)
    assert [m.id for m in groups[where["g"]]] == ["g"]
    assert len(groups) == 3, [[m.id for m in g] for g in groups]  # two fronts + the exclusive one
    assert pack(mutants, text, Path("rb.md")) == groups  # deterministic


def test_an_edit_must_match_exactly_once() -> None:
    twice = _m("x", ("s.one",), edits=(cat.Edit(old="a", new="b"),))
    with pytest.raises(CatalogueError, match="matches 3 times"):
        spans(twice, "a a a", Path("rb.md"))
    never = _m("y", ("s.one",), edits=(cat.Edit(pattern=r"z+", replacement="q"),))
    with pytest.raises(CatalogueError, match="matches 0 times"):
        spans(never, "a a a", Path("rb.md"))
    clash = _m("z", ("s.one",), edits=(cat.Edit(old="ab", new="1"), cat.Edit(old="bc", new="2")))
    with pytest.raises(CatalogueError, match="touch the same text"):
        spans(clash, "abc", Path("rb.md"))


def test_regex_edit_expands_groups_and_spans_apply_at_once() -> None:
    text = "User=spacetimedb\nRestart=always\n"
    a = _m("a", ("s.one",), edits=(cat.Edit(pattern=r"User=(\w+)", replacement=r"User=root # was \1"),))
    b = _m("b", ("s.two",), edits=(cat.Edit(old="Restart=always", new="Restart=no"),))
    found = spans(a, text, Path("rb")) + spans(b, text, Path("rb"))
    assert cat.apply_spans(text, found) == "User=root # was spacetimedb\nRestart=no\n"


# ---------------------------------------------------------------- catalogue validation

CHECKS = {"service.unit-enabled": "service", "service.restart-always": "service", "service.unit-active": "service",
          "tls.certbot-timer": "tls", "firewall.active": "firewall"}


def _catalogue(tmp_path: Path, body: str) -> Path:
    (tmp_path / "rb.md").write_text("Step\n----\n\n    sudo systemctl enable spacetimedb\n    Restart=always\n")
    path = tmp_path / "catalogue.toml"
    path.write_text(textwrap.dedent("""
        [[configs]]
        id = "c1"
        description = "test config"
        runbook = "rb.md"
        profile = "default"
        suites = ["service", "firewall"]
        backends = ["docker", "vm"]
        known_red = { "firewall.active" = "not required" }
        """) + textwrap.dedent(body))
    return path


GOOD = """
    [[mutants]]
    id = "m1"
    description = "d"
    config = "c1"
    backends = ["docker"]
    kind = "runbook"
    edits = [{ old = "Restart=always", new = "Restart=no" }]
    expect_red = ["service.restart-always"]
    """


def test_a_valid_catalogue_loads(tmp_path: Path) -> None:
    catalogue = load_catalogue(_catalogue(tmp_path, GOOD), CHECKS)
    assert [m.id for m in catalogue.mutants] == ["m1"] and catalogue.configs["c1"].known_red


@pytest.mark.parametrize(("change", "message"), [
    (('expect_red = ["service.restart-always"]', 'expect_red = ["service.nope"]'), "unknown check id"),
    (('expect_red = ["service.restart-always"]', 'expect_red = ["tls.certbot-timer"]'), "does not run"),
    (('expect_red = ["service.restart-always"]', 'expect_red = ["firewall.active"]'), "known_red"),
    (('expect_red = ["service.restart-always"]', 'expect_red = []'), "expect_red"),
    (('config = "c1"', 'config = "c9"'), "unknown config"),
    (('kind = "runbook"', 'kind = "magic"'), "kind"),
    (('kind = "runbook"', 'kind = "host"'), "does not belong to a host mutant"),
    (('backends = ["docker"]', 'backends = ["ssh"]'), "unknown backend"),
    (('id = "m1"', 'id = "M 1"'), "lower-case"),
    (('edits = [{ old = "Restart=always", new = "Restart=no" }]', 'edits = [{ old = "x" }]'), "each edit"),
    (('edits = [{ old = "Restart=always", new = "Restart=no" }]', 'edits = [{ pattern = "(", replacement = "" }]'),
     "bad pattern"),
    (('description = "d"', 'description = "d"\ncolour = "red"'), "unknown key"),
])
def test_broken_catalogue_entries_are_named(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = _catalogue(tmp_path, GOOD.replace(*change))
    with pytest.raises(CatalogueError, match=message) as info:
        load_catalogue(path, CHECKS)
    assert "\n" not in info.value.one_line()


def test_duplicate_ids_and_bad_toml_are_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="used twice"):
        load_catalogue(_catalogue(tmp_path, GOOD + GOOD), CHECKS)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[configs]\n")
    with pytest.raises(CatalogueError, match="not valid TOML"):
        load_catalogue(bad, CHECKS)


# ---------------------------------------------------------------- the judge, on recorded runs


def _unit(root: Path, uid: str, members: list[dict], outcomes: dict[str, str] | None, *, known: dict | None = None,
          host: list[str] | None = None, host_exit: int = 0, sha: str = "abc", required: set | None = None,
          lab_error: str = "") -> None:
    d = root / "units" / uid
    (d / "run").mkdir(parents=True)
    (d / "unit.json").write_text(json.dumps({"id": uid, "kind": "group" if members else "baseline", "config": "c1",
                                             "members": members, "known_red": known or {}, "runbook_sha256": "abc",
                                             "host_commands": host or []}))
    (d / "result.json").write_text(json.dumps({"exit": 1, "seconds": 3.0}))
    if outcomes is not None:
        checks = [{"id": c, "outcome": o, "required": c in (required if required is not None else {c}),
                   "message": f"{c} said so"} for c, o in outcomes.items()]
        (d / "run" / "conformance.json").write_text(json.dumps({
            "checks": checks, "runbook": {"sha256": sha}, "lab_error": lab_error, "interrupted": False,
            "verdict": "fail", "adaptations": [{"id": ADAPTATION_ID, "summary": f"x: {c}", "exit_status": host_exit}
                                               for c in host or []]}))


def _member(mid: str, expect: list[str], may: list[str] | None = None) -> dict:
    return {"id": mid, "expect_red": expect, "may_also_fail": may or [], "kind": "runbook"}


def _judge(root: Path, planned: list[dict], sentinel: str = "") -> Judgement:
    records = {p["id"]: [load_unit(root / "units" / p["id"])] for p in planned
               if (root / "units" / p["id"]).exists()}
    return judge(planned, records, sentinel)


BASELINE = {"id": "c1.baseline", "config": "c1", "members": []}


def _clean_baseline(root: Path, checks: list[str], **kw: object) -> None:
    _unit(root, "c1.baseline", [], {c: "passed" for c in checks}, **kw)  # type: ignore[arg-type]


def test_judge_detected_missed_and_unexpected(tmp_path: Path) -> None:
    _unit(tmp_path, "c1.baseline", [], {"s.a": "passed", "s.b": "passed", "f.known": "failed"},
          known={"f.known": "why"}, required=set())
    _unit(tmp_path, "c1.g01", [_member("hit", ["s.a"], ["s.c"]), _member("miss", ["s.b"])],
          {"s.a": "failed", "s.b": "not-applicable", "s.c": "error", "f.known": "failed"},
          known={"f.known": "why"}, required={"s.a", "s.b", "s.c"})
    planned = [BASELINE, {"id": "c1.g01", "config": "c1", "members": ["hit", "miss"]}]
    j = _judge(tmp_path, planned)
    status = {m["id"]: m["status"] for m in j.mutants}
    assert status == {"hit": "detected", "miss": "missed"}
    assert j.detected == 1 and j.missed == 1 and j.invalid == 0 and j.percent == 50.0 and not j.ok
    assert j.score_line() == "detection score: 1/2 (50%); detected 1, missed 1, invalid 0, not run 0"
    assert not j.unexpected
    assert j.baselines[0]["clean"] and j.baselines[0]["known_red_seen"] == ["f.known"]
    miss = next(m for m in j.mutants if m["id"] == "miss")
    assert miss["why"] == "s.b is not-applicable"
    hit = next(m for m in j.mutants if m["id"] == "hit")
    assert hit["collateral_red"] == ["s.c"] and hit["collateral_unseen"] == []


def test_checks_no_member_can_touch_going_red_make_the_whole_unit_invalid(tmp_path: Path) -> None:
    """What a broken lab looks like (everything red): never a detection, and out of the score."""
    _clean_baseline(tmp_path, ["s.a", "s.b", "s.d"])
    _unit(tmp_path, "c1.g01", [_member("m1", ["s.a"]), _member("m2", ["s.b"])],
          {"s.a": "failed", "s.b": "failed", "s.d": "failed"})
    j = _judge(tmp_path, [BASELINE, {"id": "c1.g01", "config": "c1", "members": ["m1", "m2"]}])
    assert {m["id"]: m["status"] for m in j.mutants} == {"m1": "invalid", "m2": "invalid"}
    assert "s.d" in j.mutants[0]["why"] and "broken lab" in j.mutants[0]["why"]
    assert j.detected == 0 and j.scored == 0 and j.percent == 0.0 and not j.ok
    assert [(u["what"], u["check"]) for u in j.unexpected] == [("red, expected by no member", "s.d")]


def test_an_expected_check_that_errored_or_never_ran_is_invalid_not_detected(tmp_path: Path) -> None:
    _clean_baseline(tmp_path, ["s.a", "s.b"])
    _unit(tmp_path, "c1.g01", [_member("errored", ["s.a"]), _member("absent", ["s.gone"])],
          {"s.a": "error", "s.b": "passed"})
    j = _judge(tmp_path, [BASELINE, {"id": "c1.g01", "config": "c1", "members": ["errored", "absent"]}])
    assert {m["id"]: m["status"] for m in j.mutants} == {"errored": "invalid", "absent": "invalid"}
    assert "an error is not a detection" in j.mutants[0]["why"] and "did not run" in j.mutants[1]["why"]
    assert [(u["what"], u["check"]) for u in j.unexpected] == [("expected check did not run", "s.gone")]


def test_judge_flags_red_baselines_required_known_red_and_mutants_judged_against_them(tmp_path: Path) -> None:
    _unit(tmp_path, "c1.baseline", [], {"s.a": "failed", "f.known": "failed"}, known={"f.known": "why"})
    _unit(tmp_path, "c1.g01", [_member("m", ["s.b"])], {"s.a": "passed", "s.b": "failed"})
    j = _judge(tmp_path, [BASELINE, {"id": "c1.g01", "config": "c1", "members": ["m"]}])
    what = sorted((u["what"], u["check"]) for u in j.unexpected)
    assert what == [("baseline red", "s.a"), ("known_red check is required", "f.known")]
    assert not j.baselines[0]["clean"]
    assert j.mutants[0]["status"] == "invalid" and "baseline of config c1 is not clean" in j.mutants[0]["why"]


def test_a_mutant_whose_baseline_never_ran_is_invalid(tmp_path: Path) -> None:
    _unit(tmp_path, "c1.g01", [_member("m", ["s.a"])], {"s.a": "failed"})
    j = _judge(tmp_path, [BASELINE, {"id": "c1.g01", "config": "c1", "members": ["m"]}])
    assert j.mutants[0]["status"] == "invalid" and j.baselines == [
        {"config": "c1", "unit": "c1.baseline", "clean": False, "red": [], "why": "not run"}]
    assert not j.ok and j.percent == 0.0


def test_broken_runs_make_their_mutants_invalid(tmp_path: Path) -> None:
    _clean_baseline(tmp_path, ["s.a"])
    _unit(tmp_path, "c1.g01", [_member("m1", ["s.a"])], None)
    _unit(tmp_path, "c1.g02", [_member("m2", ["s.a"])], {"s.a": "failed"}, sha="other")
    _unit(tmp_path, "c1.g03", [_member("m3", ["s.a"])], {"s.a": "failed"}, host=["false"], host_exit=1)
    _unit(tmp_path, "c1.g04", [_member("m4", ["s.a"])], {"s.a": "failed"}, lab_error="docker went away")
    planned = [BASELINE] + [{"id": f"c1.g0{n}", "config": "c1", "members": [f"m{n}"]} for n in range(1, 6)]
    j = _judge(tmp_path, planned)
    what = {(u["unit"], u["what"]) for u in j.unexpected}
    assert what == {("c1.g01", "no report"), ("c1.g02", "other runbook"), ("c1.g03", "host mutant command failed"),
                    ("c1.g04", "lab error")}
    status = {m["id"]: m["status"] for m in j.mutants}
    assert status == {"m1": "invalid", "m2": "invalid", "m3": "invalid", "m4": "invalid", "m5": "not run"}
    assert j.detected == 0 and j.invalid == 4 and j.not_run == 1 and not j.ok
    assert "docker went away" in next(m["why"] for m in j.mutants if m["id"] == "m4")


def test_an_undetected_sentinel_fails_the_judgement(tmp_path: Path) -> None:
    _clean_baseline(tmp_path, ["s.a", "s.b"])
    _unit(tmp_path, "c1.g01", [_member("forced", ["s.a"])], {"s.a": "passed", "s.b": "passed"})
    _unit(tmp_path, "c1.g02", [_member("other", ["s.b"])], {"s.a": "passed", "s.b": "failed"})
    planned = [BASELINE, {"id": "c1.g01", "config": "c1", "members": ["forced"]},
               {"id": "c1.g02", "config": "c1", "members": ["other"]}]
    assert not _judge(tmp_path, planned, sentinel="forced").ok
    assert not _judge(tmp_path, planned, sentinel="forced").sentinel_detected
    assert not _judge(tmp_path, planned[:1] + planned[2:], sentinel="forced").ok  # sentinel not in the plan


# ---------------------------------------------------------------- shards


def test_parse_shard() -> None:
    assert parse_shard("1/1") == (1, 1) and parse_shard("3/4") == (3, 4)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0", "-1/2"):
        with pytest.raises(Exception, match="I/N"):
            parse_shard(bad)


def test_shards_partition_the_mutant_units_and_each_runs_the_gates_it_needs(shipped: cat.Catalogue) -> None:
    texts, paths = _texts(shipped)
    units = plan_units(shipped, select(shipped, "docker"), texts, paths)
    sentinel = shipped.sentinel("docker")
    assert sentinel is not None
    gate_ids = {u.id for u in units if u.gate}
    forced = next(u for u in units if sentinel in u.members)
    assert forced.gate and all(u.gate for u in units if not u.members)
    for total in (1, 2, 3, 5, len(units) + 2):
        parts = [shard(units, i, total) for i in range(1, total + 1)]
        others = [u.id for p in parts for u in p if not u.gate]
        assert sorted(others) == sorted(u.id for u in units if not u.gate) and len(others) == len(set(others))
        for part in parts:
            ids = {u.id for u in part}
            # the forced-fail unit and its baseline in every shard, and the baseline of every config it judges
            assert forced.id in ids and f"{forced.config.id}.baseline" in ids
            assert all(f"{u.config.id}.baseline" in ids for u in part)
            assert ids & gate_ids >= {forced.id}
    assert shard(units, 1, 1) == units


def test_select_always_brings_the_forced_fail_mutant(shipped: cat.Catalogue) -> None:
    chosen = select(shipped, "docker", ["tls-v1-enabled"])
    assert [m.id for m in chosen] == sorted([m.id for m in chosen], key=[x.id for x in shipped.mutants].index)
    assert {m.id for m in chosen} == {"tls-v1-enabled", "service-exec-start-missing"}
    for backend in ("docker", "vm"):
        forced = shipped.sentinel(backend)
        assert forced is not None and backend in forced.backends


# ---------------------------------------------------------------- runner end to end, with a stand-in run

FAKE_RUN = """#!{python}
import hashlib, json, os, signal, sys, time
from pathlib import Path
args = sys.argv[1:]
assert args[:3] == ["-m", "harness", "run"], args
opts = dict(zip(args[3::2], args[4::2]))
unit = json.loads(Path("unit.json").read_text())
out = Path(opts["--report-dir"])
out.mkdir(parents=True, exist_ok=True)
if os.environ.get("FAKE_MODE") == "sleep":
    def stop(*_):
        Path("got-sigint").write_text("1")
        sys.exit(130)
    signal.signal(signal.SIGINT, stop)
    Path("started").write_text("1")
    time.sleep(60)
    sys.exit(3)
started = time.time()
if "--save-checkpoint" in args:  # the apply phase ended: the kept checkpoints are said
    (out / "checkpoints.json").write_text("{{}}")
slow_unit, _, slow_seconds = os.environ.get("FAKE_SLOW", "").partition(":")
if slow_unit == unit["id"]:
    time.sleep(float(slow_seconds))
red = set()
for m in unit["members"]:
    red |= set(m["expect_red"])
red -= set(os.environ.get("FAKE_MISS", "").split(","))
extra_unit, _, extra_check = os.environ.get("FAKE_EXTRA_RED", "").partition(":")
if extra_unit == unit["id"]:
    red.add(extra_check)
ids = set(os.environ["FAKE_CHECKS"].split(",")) | red
if os.environ.get("FAKE_ALL_RED") == unit["id"]:
    red = set(ids)
checks = [{{"id": c, "outcome": "failed" if c in red else "passed", "required": True, "message": "fake"}} for c in ids]
host = json.loads(Path(opts["--mutate-host"]).read_text())["commands"] if "--mutate-host" in opts else []
report = {{"checks": checks, "runbook": {{"sha256": hashlib.sha256(Path(opts["--runbook"]).read_bytes()).hexdigest()}},
          "verdict": "fail" if red else "pass", "lab_error": "", "interrupted": False,
          "adaptations": [{{"id": "selftest.host-mutant", "summary": c, "exit_status": 0}} for c in host],
          "env_seen": {{k: v for k, v in os.environ.items() if k.startswith("SEL_")}},
          "argv": args, "started": started, "ended": time.time()}}
(out / "conformance.json").write_text(json.dumps(report))
sys.exit(1 if red else 0)
"""

FAKE_CATALOGUE = """
[[configs]]
id = "c1"
description = "service config"
runbook = "rb.md"
profile = "profiles/p.toml"
suites = ["service"]
backends = ["docker", "vm"]
env = { SEL_CONFIG = "1" }

[[configs]]
id = "c2"
description = "tls config"
runbook = "$STDB_RUNBOOK"
profile = "self-hosting-only"
suites = ["tls"]
backends = ["docker"]

[[mutants]]
id = "enable-gone"
description = "d"
config = "c1"
backends = ["docker", "vm"]
kind = "runbook"
edits = [{ old = "    sudo systemctl enable spacetimedb\\n", new = "" }]
expect_red = ["service.unit-enabled"]
sentinel = true

[[mutants]]
id = "restart-no"
description = "d"
config = "c1"
backends = ["docker"]
kind = "runbook"
edits = [{ pattern = 'Restart=(always)', replacement = 'Restart=no' }]
expect_red = ["service.restart-always"]

[[mutants]]
id = "root-owned"
description = "d"
config = "c1"
backends = ["docker"]
kind = "host"
commands = ["chown root /stdb"]
expect_red = ["service.root-dir-owned-by-service-user"]

[[mutants]]
id = "exec-gone"
description = "d"
config = "c1"
backends = ["docker"]
kind = "env"
env = { SEL_MUTANT = "x" }
expect_red = ["service.unit-active"]
may_also_fail = ["service.restart-always"]
exclusive = true

[[mutants]]
id = "timer-off"
description = "d"
config = "c2"
backends = ["docker"]
kind = "host"
commands = ["systemctl disable --now certbot.timer"]
expect_red = ["tls.certbot-timer"]
"""

FAKE_CHECKS = ("service.unit-enabled,service.restart-always,service.root-dir-owned-by-service-user,"
               "service.unit-active,tls.certbot-timer")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "kit"
    (root / "profiles").mkdir(parents=True)
    (root / "profiles" / "p.toml").write_text("name = 'p'\n")
    (root / "rb.md").write_text("Step\n----\n\n    sudo systemctl enable spacetimedb\n    Restart=always\n")
    (root / "catalogue.toml").write_text(FAKE_CATALOGUE)
    (root / "user.md").write_text("user runbook\n")
    script = root / "fake-python"
    script.write_text(FAKE_RUN.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("STDBC_SELFTEST_PYTHON", str(script))
    monkeypatch.setenv("STDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_CHECKS", FAKE_CHECKS)
    monkeypatch.setenv("STDB_RUNBOOK", str(root / "user.md"))
    return root


def _selftest(fake: Path, out: Path, *extra: str) -> int:
    return main(["selftest", "--catalogue", str(fake / "catalogue.toml"), "--report-dir", str(out), *extra])


def test_selftest_end_to_end_with_a_stand_in_run(fake: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _selftest(fake, out) == 0
    printed = capsys.readouterr().out
    assert "detection score: 5/5 (100%)" in printed and "unexpected outcomes: none" in printed
    data = json.loads((out / "selftest.json").read_text())
    assert data["score"] == {"detected": 5, "missed": 0, "invalid": 0, "not_run": 0, "scored": 5, "total": 5,
                             "percent": 100.0} and data["ok"]
    assert data["sentinel"] == {"id": "enable-gone", "detected": True}
    assert "forced-fail mutant enable-gone: detected" in printed
    units = {u["id"]: u for u in data["units"]}
    assert set(units) == {"c1.baseline", "c1.g01", "c1.g02", "c2.baseline", "c2.g01"} and data["lab_runs"] == 5
    group = units["c1.g01"]
    assert group["members"] == ["enable-gone", "restart-no", "root-owned"]
    unit_dir = out / "units" / "c1.g01"
    mutated = (unit_dir / "runbook.md").read_text()
    assert "systemctl enable" not in mutated and "Restart=no" in mutated
    assert json.loads((unit_dir / "host.json").read_text())["commands"] == ["chown root /stdb"]
    report = json.loads((unit_dir / "run" / "conformance.json").read_text())
    argv = report["argv"]
    assert argv[argv.index("--profile") + 1] == str((fake / "profiles" / "p.toml").resolve())
    assert argv[argv.index("--suites") + 1] == "service" and "--mutate-host" in argv
    assert report["env_seen"] == {"SEL_CONFIG": "1"}
    exclusive = json.loads((out / "units" / "c1.g02" / "run" / "conformance.json").read_text())
    assert exclusive["env_seen"] == {"SEL_CONFIG": "1", "SEL_MUTANT": "x"}
    baseline = json.loads((out / "units" / "c2.baseline" / "run" / "conformance.json").read_text())["argv"]
    assert baseline[baseline.index("--runbook") + 1] == str(fake / "user.md")  # $STDB_RUNBOOK, unmodified
    md = (out / "selftest.md").read_text()
    assert "detection score: 5/5 (100%)" in md and "| `restart-no` | c1.g01 |" in md
    # exec-gone may also turn restart-always red, and did not here: the report says so (tighten it)
    assert "- `exec-gone`: `service.restart-always`" in md


def test_a_red_baseline_stops_the_selftest_before_the_mutants(fake: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_EXTRA_RED", "c2.baseline:tls.certbot-timer")
    assert _selftest(fake, tmp_path / "a") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("stdb-conformance: selftest stopped before the mutants: the baseline c2.baseline "
                              "is not clean"), err
    data = json.loads((tmp_path / "a" / "selftest.json").read_text())
    assert data["stopped"] and not data["ok"]
    assert set(data["ran"]) == {"c1.baseline", "c1.g01", "c2.baseline"}  # the gates only
    assert {m["id"]: m["status"] for m in data["mutants"]}["timer-off"] == "not run"


def test_a_configs_mutants_start_once_its_own_baseline_ended_not_every_gate(fake: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SLOW", "c2.baseline:3")
    assert _selftest(fake, tmp_path / "a", "--jobs", "2", "--fresh") == 0
    times = {u.name: json.loads((u / "run" / "conformance.json").read_text())
             for u in (tmp_path / "a" / "units").iterdir()}
    # c1's mutants ran while c2's slow baseline still ran, and after their own baseline and the forced-fail unit
    assert times["c1.g02"]["ended"] < times["c2.baseline"]["ended"]
    assert times["c1.g02"]["started"] >= max(times["c1.baseline"]["ended"], times["c1.g01"]["ended"])
    assert times["c2.g01"]["started"] >= times["c2.baseline"]["ended"]  # no checkpoints kept: to its end


def test_a_baselines_mutants_start_once_it_has_kept_its_checkpoints(fake: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SLOW", "c2.baseline:3")
    assert _selftest(fake, tmp_path / "a", "--jobs", "2") == 0
    times = {u.name: json.loads((u / "run" / "conformance.json").read_text())
             for u in (tmp_path / "a" / "units").iterdir()}
    assert times["c2.baseline"]["started"] < times["c2.g01"]["started"] < times["c2.baseline"]["ended"]


def test_a_red_baseline_stops_new_runs_while_others_end_normally(fake: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_EXTRA_RED", "c2.baseline:tls.certbot-timer")
    monkeypatch.setenv("FAKE_SLOW", "c2.baseline:2")
    assert _selftest(fake, tmp_path / "a", "--jobs", "2", "--fresh") == 1
    assert "selftest stopped before the rest of the mutants: the baseline c2.baseline is not clean" in (
        capsys.readouterr().err)
    data = json.loads((tmp_path / "a" / "selftest.json").read_text())
    assert "c2.g01" not in data["ran"] and {m["id"]: m["status"] for m in data["mutants"]}["timer-off"] == "not run"


def test_a_group_runs_only_the_suites_its_mutants_can_turn_red(fake: Path, tmp_path: Path) -> None:
    catalogue = FAKE_CATALOGUE.replace('suites = ["service"]', 'suites = ["service", "tls"]', 1)
    (fake / "two-suites.toml").write_text(catalogue)
    assert main(["selftest", "--catalogue", str(fake / "two-suites.toml"), "--only", "c1", "--dry-run",
                 "--report-dir", str(tmp_path / "d")]) == 0
    suites = {u.name: json.loads((u / "unit.json").read_text())["suites"] for u in (tmp_path / "d" / "units").iterdir()}
    assert suites == {"c1.baseline": ["tls", "service"], "c1.g01": ["service"], "c1.g02": ["service"]}
    argv = json.loads((tmp_path / "d" / "units" / "c1.g01" / "unit.json").read_text())["argv"]
    assert argv[argv.index("--suites") + 1] == "service"


def test_a_forced_fail_mutant_that_is_not_detected_stops_the_selftest(fake: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_MISS", "service.unit-enabled")  # a lab whose checks cannot fail
    assert _selftest(fake, tmp_path / "a") == 1
    err = capsys.readouterr().err
    assert "the forced-fail mutant enable-gone was not detected (missed: service.unit-enabled is passed)" in err
    data = json.loads((tmp_path / "a" / "selftest.json").read_text())
    assert data["sentinel"] == {"id": "enable-gone", "detected": False} and "c1.g02" not in data["ran"]


def test_a_broken_lab_gives_invalid_never_detected(fake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Every check red in one group's run (a lab that broke under it): its mutant counts apart, not as a hit."""
    monkeypatch.setenv("FAKE_ALL_RED", "c2.g01")
    assert _selftest(fake, tmp_path / "a") == 1
    data = json.loads((tmp_path / "a" / "selftest.json").read_text())
    timer = next(m for m in data["mutants"] if m["id"] == "timer-off")
    assert timer["status"] == "invalid" and "broken lab" in timer["why"]
    assert data["score"]["invalid"] == 1 and data["score"]["detected"] == 4 and data["score"]["scored"] == 4
    assert "detection score: 4/4 (100%); detected 4, missed 0, invalid 1, not run 0" in capsys.readouterr().out


def test_selftest_exit_1_on_an_undetected_mutant_or_an_unexpected_red(fake: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_MISS", "tls.certbot-timer")
    assert _selftest(fake, tmp_path / "a") == 1
    assert "MISSED (tls.certbot-timer is passed)" in capsys.readouterr().out
    monkeypatch.delenv("FAKE_MISS")
    monkeypatch.setenv("FAKE_EXTRA_RED", "c2.g01:service.unit-active")
    assert _selftest(fake, tmp_path / "b") == 1
    data = json.loads((tmp_path / "b" / "selftest.json").read_text())
    assert data["score"]["percent"] == 100.0 and data["score"]["invalid"] == 1 and not data["ok"]
    assert [(u["unit"], u["check"]) for u in data["unexpected"]] == [("c2.g01", "service.unit-active")]


def test_only_dry_run_and_list(fake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _selftest(fake, tmp_path / "o", "--only", "timer-off", "--dry-run") == 0
    printed = capsys.readouterr().out
    # the forced-fail unit (c1.g01) and its baseline come along with any selection
    assert "c2.g01" in printed and "--mutate-host" in printed and "c1.g01" in printed and "c1.g02" not in printed
    assert not (tmp_path / "o" / "units" / "c2.g01" / "run").exists()  # nothing ran
    assert _selftest(fake, tmp_path / "l", "--backend", "vm", "--list") == 0
    listing = capsys.readouterr().out
    assert "enable-gone" in listing and "restart-no" not in listing and not (tmp_path / "l").exists()


def test_shards_merge_into_the_whole_score(fake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _selftest(fake, tmp_path / "s1", "--shard", "1/2") == 0
    assert _selftest(fake, tmp_path / "s2", "--shard", "2/2") == 0
    s1 = json.loads((tmp_path / "s1" / "selftest.json").read_text())
    s2 = json.loads((tmp_path / "s2" / "selftest.json").read_text())
    assert set(s1["ran"]) | set(s2["ran"]) == {u["id"] for u in s1["plan"]["units"]}
    # only gates (baselines, the forced-fail unit) run in both shards
    assert set(s1["ran"]) & set(s2["ran"]) == {"c1.baseline", "c1.g01"}
    capsys.readouterr()
    assert main(["selftest", "--merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--report-dir",
                 str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "selftest.json").read_text())
    assert merged["score"]["detected"] == 5 and merged["score"]["percent"] == 100.0 and merged["ok"]
    assert merged["lab_runs"] == len(s1["ran"]) + len(s2["ran"])
    assert "detection score: 5/5 (100%)" in capsys.readouterr().out
    # one shard alone does not make the whole selftest: the other shard's mutants are "not run"
    assert main(["selftest", "--merge", str(tmp_path / "s1"), "--report-dir", str(tmp_path / "m1")]) == 1
    alone = json.loads((tmp_path / "m1" / "selftest.json").read_text())
    assert alone["score"]["total"] == 5 and {m["status"] for m in alone["mutants"]} == {"detected", "not run"}
    # a shard whose baseline record is missing: its mutants are invalid and the merge fails
    s2_data = json.loads((tmp_path / "s2" / "selftest.json").read_text())
    s2_data["ran"].remove("c2.baseline")
    (tmp_path / "s2" / "selftest.json").write_text(json.dumps(s2_data))
    assert main(["selftest", "--merge", str(tmp_path / "s2"), "--report-dir", str(tmp_path / "m2")]) == 1
    no_base = json.loads((tmp_path / "m2" / "selftest.json").read_text())
    timer = next(m for m in no_base["mutants"] if m["id"] == "timer-off")
    assert timer["status"] == "invalid" and "baseline of config c2" in timer["why"] and not no_base["ok"]
    # shards of different plans do not merge
    assert _selftest(fake, tmp_path / "other", "--only", "timer-off") == 0
    assert main(["selftest", "--merge", str(tmp_path / "s1"), str(tmp_path / "other")]) == 2


@pytest.mark.parametrize("argv", [
    ["--shard", "0/2"], ["--shard", "x"], ["--only", "no-such-mutant"], ["--jobs", "0"],
    ["--merge", "/nonexistent/dir"], ["--merge", "/tmp", "--shard", "1/2"],
])
def test_usage_errors_are_one_line_exit_2(fake: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--catalogue", str(fake / "catalogue.toml"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stdb-conformance: error:") and "\n" not in err and "Traceback" not in err


def test_a_broken_catalogue_is_exit_2(fake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fake / "rb.md").write_text("Restart=always Restart=always\n")  # the edits no longer fit
    assert _selftest(fake, tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "matches" in err and "exactly once" in err and err.count("\n") == 1


def test_interrupt_stops_the_child_run_and_exits_130(fake: Path, tmp_path: Path) -> None:
    out = tmp_path / "int"
    env = {**os.environ, "FAKE_MODE": "sleep", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "selftest", "--catalogue", str(fake / "catalogue.toml"),
                             "--report-dir", str(out)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started = out / "units" / "c1.baseline" / "started"
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), proc.communicate(timeout=10)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert (out / "units" / "c1.baseline" / "got-sigint").exists()  # the child got one SIGINT and stopped
    assert not (out / "units" / "c1.g01" / "result.json").exists()  # nothing started after the interrupt
    data = json.loads((out / "selftest.json").read_text())
    assert data["interrupted"] and not data["ok"]


# ---------------------------------------------------------------- the run's hook


class _Target:
    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []

    def run(self, command: str, *, user: str = "root", timeout: float = 0) -> CommandResult:
        self.commands.append((command, user))
        return CommandResult(command=command, exit_status=0 if command == "true" else 3, stdout="out",
                             stderr="", duration=0.1)


class _Report:
    def __init__(self) -> None:
        self.adaptations: list[dict] = []


def test_host_hook_records_each_command_as_an_adaptation(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"commands": ["true", "false"]}))
    target, report = _Target(), _Report()
    apply_host_mutants(path, target, report, lambda _m: None)
    assert target.commands == [("true", "root"), ("false", "root")]
    assert [(a["id"], a["summary"], a["exit_status"]) for a in report.adaptations] == [
        (ADAPTATION_ID, "selftest mutant (host state): true", 0),
        (ADAPTATION_ID, "selftest mutant (host state): false", 3)]
    assert report.adaptations[1]["detail"].startswith("exit 3")


@pytest.mark.parametrize("content", ["not json", "[]", '{"commands": "x"}', '{"commands": [""]}'])
def test_host_hook_rejects_malformed_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "host.json"
    path.write_text(content)
    with pytest.raises(Exception, match="--mutate-host"):
        load_host_mutants(path)


def test_run_rejects_a_bad_mutate_host_file_before_any_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "h.json").write_text("{}")
    code = main(["run", "--runbook", str(shared_runbook()), "--mutate-host", str(tmp_path / "h.json"),
                 "--report-dir", str(tmp_path / "out")])
    assert code == 2 and "--mutate-host" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unit_json_records_the_runbook_sha(fake: Path, tmp_path: Path) -> None:
    assert _selftest(fake, tmp_path / "o", "--only", "c1", "--dry-run") == 0
    meta = json.loads((tmp_path / "o" / "units" / "c1.baseline" / "unit.json").read_text())
    assert meta["runbook_sha256"] == hashlib.sha256((fake / "rb.md").read_bytes()).hexdigest()


def test_with_several_jobs_the_longest_runs_start_first() -> None:
    from types import SimpleNamespace

    from harness.selftest.groups import Unit
    from harness.selftest.runner import expected_seconds, longest_first

    def unit(uid: str, suites: list[str]) -> tuple[Unit, Path, dict]:
        return Unit(id=uid, config=SimpleNamespace(suites=suites)), Path(uid), {}  # type: ignore[arg-type]

    items = [unit("service.g01", ["service"]), unit("volume.g01", ["mounts"]),
             unit("drill.g01", ["backup_restore"]), unit("hosting.g01", ["routes", "tls", "firewall", "operator",
                                                                           "service", "upgrade"]),
             unit("service.g02", ["service"])]
    order = [u.id for u, _, _ in longest_first(items)]
    assert order == ["hosting.g01", "drill.g01", "service.g01", "service.g02", "volume.g01"]
    assert expected_seconds(items[3][0]) > expected_seconds(items[2][0]) > expected_seconds(items[0][0])
    # how long each took last time, where known, comes before the estimate
    order = [u.id for u, _, _ in longest_first(items, {"volume.g01": 500.0, "hosting.g01": 5.0})]
    assert order == ["volume.g01", "drill.g01", "service.g01", "service.g02", "hosting.g01"]


def test_a_selftest_remembers_how_long_each_run_took_for_the_next_ones_order(
        fake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SLOW", "c1.g02:1.5")
    assert _selftest(fake, tmp_path / "a", "--jobs", "2") == 0
    known = json.loads((tmp_path / "cache" / "selftest" / "seconds.json").read_text())
    assert known["docker:c1:exec-gone"] >= 1.5 and set(known) == {
        "docker:c1:baseline", "docker:c1:enable-gone,restart-no,root-owned", "docker:c1:exec-gone",
        "docker:c2:baseline", "docker:c2:timer-off"}
    from types import SimpleNamespace

    from harness.selftest.groups import Unit
    from harness.selftest.runner import last_seconds

    exec_gone = Unit(id="c1.g02", config=SimpleNamespace(id="c1"),  # type: ignore[arg-type]
                     members=[SimpleNamespace(id="exec-gone")])  # type: ignore[list-item]
    baseline = Unit(id="c2.baseline", config=SimpleNamespace(id="c2"))  # type: ignore[arg-type]
    other = Unit(id="c3.baseline", config=SimpleNamespace(id="c3"))  # type: ignore[arg-type]
    found = last_seconds([exec_gone, baseline, other], "docker")
    assert set(found) == {"c1.g02", "c2.baseline"} and found["c1.g02"] == known["docker:c1:exec-gone"]
    assert last_seconds([exec_gone], "vm") == {}  # another backend's runs say nothing
    (tmp_path / "cache" / "selftest" / "seconds.json").write_text("not json")
    assert last_seconds([exec_gone], "docker") == {}  # a broken file only loses the order


CHECKPOINT_CATALOGUE = """
[[configs]]
id = "c1"
description = "service config"
runbook = "rb.md"
profile = "profiles/p.toml"
suites = ["service"]
backends = ["docker"]

[[mutants]]
id = "enable-other"
description = "d"
config = "c1"
backends = ["docker"]
kind = "runbook"
edits = [{ old = "enable spacetimedb", new = "enable spacetimedb-other" }]
expect_red = ["service.unit-enabled"]
sentinel = true
exclusive = true

[[mutants]]
id = "restart-no"
description = "d"
config = "c1"
backends = ["docker"]
kind = "runbook"
edits = [{ pattern = 'Restart=(always)', replacement = 'Restart=no' }]
expect_red = ["service.restart-always"]
"""


def test_baselines_keep_checkpoints_where_their_mutants_plans_part(fake: Path, tmp_path: Path) -> None:
    """Each baseline keeps checkpoints after the step counts where its config's mutants' plans first differ from
    it (harness.checkpoint); every other unit starts from one; `--fresh` asks for neither."""
    (fake / "checkpoints.toml").write_text(CHECKPOINT_CATALOGUE)
    run = ["selftest", "--catalogue", str(fake / "checkpoints.toml"), "--dry-run", "--report-dir"]
    assert main([*run, str(tmp_path / "c")]) == 0
    argv = {u.name: json.loads((u / "unit.json").read_text())["argv"] for u in (tmp_path / "c" / "units").iterdir()}
    assert set(argv) == {"c1.baseline", "c1.g01", "c1.g02"}
    base = argv["c1.baseline"]
    # restart-no edits the second command (the plans part after one step); enable-other the first (no prefix)
    assert base[base.index("--save-checkpoint") + 1] == "1"
    assert "--from-checkpoint" not in base
    assert "--from-checkpoint" in argv["c1.g01"] and "--from-checkpoint" in argv["c1.g02"]
    assert main([*run, str(tmp_path / "f"), "--fresh"]) == 0
    for unit in (tmp_path / "f" / "units").iterdir():
        fresh = json.loads((unit / "unit.json").read_text())["argv"]
        assert "--from-checkpoint" not in fresh and "--save-checkpoint" not in fresh


def test_a_backend_without_checkpoints_gets_no_checkpoint_flags(fake: Path, tmp_path: Path) -> None:
    assert _selftest(fake, tmp_path / "v", "--backend", "vm", "--dry-run") == 0
    for unit in (tmp_path / "v" / "units").iterdir():
        argv = json.loads((unit / "unit.json").read_text())["argv"]
        assert "--from-checkpoint" not in argv and "--save-checkpoint" not in argv, argv
