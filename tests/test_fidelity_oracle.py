"""The conformance seed and the restore drill's oracle, without a server: determinism and coverage of the
seed, the canonical encoding, and the oracle's verdicts on constructed histories."""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from fixtures import conformance_seed as seed
from harness import fidelity

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "harness/agents/fidelity_agent.py"
WRITER = "c200" + "5a" * 30


# ------------------------------------------------------------------ helpers: a server's answer, built by hand


def untyped_json(ty: str, value: Any) -> Any:
    """SQL JSON of a value as the stand-in writes it (untyped SATS-JSON)."""
    if ty.startswith("option<"):
        return [1, []] if value is None else [0, untyped_json(ty[len("option<") : -1], value)]
    if ty == "bytes":
        return value.hex()
    if ty == "identity":
        return [hex(int(value, 16))]
    return value


def shortest_f32(value: float) -> float:
    """The f32 printed the way a Rust server prints it (shortest decimal that reads back as the same f32)."""
    for digits in range(1, 18):
        candidate = float(f"{value:.{digits}g}")
        if seed.f32_round(candidate) == value:
            return candidate
    return value


def dump_of(plan: seed.SeedPlan, seqs: list[int] | None = None, writer: str = WRITER) -> dict[str, Any]:
    dump: dict[str, Any] = {}
    for spec in seed.ALL_TABLES:
        rows = plan.expected.get(spec.name, [])
        if spec.name == seed.SEQ_TABLE.name:
            rows = [[n, seed.seq_payload(n), writer] for n in (seqs or [])]
        dump[spec.name] = {
            "schema": [{"name": n, "algebraic_type": seed.algebraic_type(t)} for n, t in spec.columns],
            "rows": [[untyped_json(t, v) for t, v in zip(spec.types, row, strict=True)] for row in rows],
            "status": 200,
        }
    return json.loads(json.dumps(dump))  # what actually crosses the wire


def ack_log(acked: range, unacked: list[int] | None = None, t0: float = 1000.0) -> str:
    lines = []
    for i, n in enumerate(acked):
        lines.append({"seq": n, "acked": True, "status": 200, "t0": t0 + i * 0.01, "t": t0 + i * 0.01 + 0.005})
    start = t0 + len(acked) * 0.01
    for i, n in enumerate(unacked or []):
        lines.append(
            {
                "seq": n,
                "acked": False,
                "status": None,
                "t0": start + i,
                "t": start + i + 0.5,
                "error": "ConnectionRefusedError",
            }
        )
    return "".join(json.dumps(line) + "\n" for line in lines)


TOKEN_OK = {"ok": True, "identity": WRITER, "checks": [{"name": "verify", "status": 204, "expected": 204, "ok": True}]}


@pytest.fixture(scope="module")
def plan() -> seed.SeedPlan:
    return seed.build_plan(11)


@pytest.fixture(scope="module")
def expected(plan: seed.SeedPlan) -> dict[str, Any]:
    return seed.expected_baseline(plan)


@pytest.fixture(scope="module")
def intact(plan: seed.SeedPlan) -> dict[str, Any]:
    return dump_of(plan, list(range(1, 51)))


def judge(expected: dict[str, Any], restored: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "expected": expected,
        "restored": restored,
        "ack_log": ack_log(range(1, 51)),
        "last_acked_before_snapshot": 45,
        "token_check": TOKEN_OK,
        "writer_identity": WRITER,
    }
    args.update(overrides)
    return fidelity.judge_restore(**args)


def prop(verdict: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(p for p in verdict["properties"] if p["id"] == pid)


# ------------------------------------------------------------------ the seed


def test_same_seed_gives_the_same_plan_and_checksums() -> None:
    first, second = seed.build_plan(3), seed.build_plan(3)
    assert first.to_json_text() == second.to_json_text()
    assert seed.baseline_checksums(first) == seed.baseline_checksums(second)


def test_different_seeds_give_different_content() -> None:
    a, b = seed.baseline_checksums(seed.build_plan(3)), seed.baseline_checksums(seed.build_plan(4))
    assert a.keys() == b.keys()
    assert all(a[t][1] != b[t][1] for t in a), "every table's content should depend on the seed"


def test_baseline_has_10000_rows_mostly_through_batched_reducer_calls(plan: seed.SeedPlan) -> None:
    assert plan.row_count >= 10_000
    calls = [s for s in plan.steps if s["kind"] == "call"]
    sqls = [s for s in plan.steps if s["kind"] == "sql"]
    call_rows, sql_rows = sum(s["rows"] for s in calls), sum(s["rows"] for s in sqls)
    assert call_rows + sql_rows == plan.row_count
    assert call_rows > sql_rows > 0
    assert len(plan.steps) < plan.row_count / 4, "batching should cut the round trips well below one per row"
    assert {s["table"] for s in sqls} == {t.name for t in seed.TABLES if t.sql}
    for spec in seed.TABLES:
        ids = [row[0] for row in plan.expected[spec.name]]
        assert len(ids) == len(set(ids)), f"{spec.name}: primary keys must be unique"


def _canonical_values(plan: seed.SeedPlan, table: str, column: str) -> set[str]:
    spec = next(t for t in seed.TABLES if t.name == table)
    index = spec.column_names.index(column)
    return {json.dumps(seed.canonical_value(spec.types[index], row[index])) for row in plan.expected[table]}


@pytest.mark.parametrize("seed_value", [0, 1, 99])
def test_edge_values_are_always_included(seed_value: int) -> None:
    plan = seed.build_plan(seed_value)
    values = lambda t, c: _canonical_values(plan, t, c)  # noqa: E731
    for ty in ("u8", "u16", "u32", "u64", "u128"):
        low, high = seed.INT_RANGES[ty]
        assert {str(low), str(high)} <= values("unsigned_ints", f"v_{ty}")
    for ty in ("i8", "i16", "i32", "i64", "i128"):
        low, high = seed.INT_RANGES[ty]
        assert {str(low), str(high), "-1", "0"} <= values("signed_ints", f"v_{ty}")
    negative_zero = {json.dumps("f64:" + struct.pack(">d", -0.0).hex())}
    assert negative_zero <= values("floats", "v_f64")
    assert {json.dumps("f64:" + struct.pack(">d", v).hex()) for v in (5e-324, 1.7976931348623157e308)} <= values(
        "floats", "v_f64"
    )
    assert json.dumps("f32:" + struct.pack(">f", -0.0).hex()) in values("floats", "v_f32")
    strings = {json.loads(v) for v in values("texts", "s")}
    for needed in ("", "e\u0301", "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"):
        assert needed in strings
    assert any("\u05e9" in s for s in strings) and any("\u6f22" in s for s in strings)  # RTL and CJK
    assert {json.dumps(""), json.dumps(bytes(range(256)).hex())} <= values("texts", "b")
    assert {"null", json.dumps({"some": ""})} <= values("optionals", "o_str")
    assert {"null", json.dumps({"some": ""})} <= values("optionals", "o_bytes")
    assert {json.dumps("0" * 64), json.dumps("f" * 64)} <= values("identities", "who")


def test_floats_compare_by_bits_and_f32_printing_does_not_matter() -> None:
    assert seed.canonical_value("f64", -0.0) != seed.canonical_value("f64", 0.0)
    # one server prints an f32 as the shortest f32 decimal, another as the f64 decimal of the same value
    assert seed.decode_sql_value("f32", 0.1) == seed.decode_sql_value("f32", 0.10000000149011612)
    assert seed.canonical_value("f64", 0.1) != seed.canonical_value("f64", 0.10000000149011612)


def test_canonical_rows_do_not_depend_on_the_servers_json_shapes(plan: seed.SeedPlan, expected: dict) -> None:
    """A server that sends u128 as strings, options as {"some": v}, identities as objects, bytes as lists
    and f32 as shortest decimals has the same content: the checksums agree with the generator's."""
    spec = next(t for t in seed.TABLES if t.name == "optionals")
    floats = next(t for t in seed.TABLES if t.name == "floats")

    def alt(ty: str, v: Any) -> Any:
        if ty.startswith("option<"):
            return {"none": []} if v is None else {"some": alt(ty[len("option<") : -1], v)}
        if ty in ("u128", "i128"):
            return str(v)
        if ty == "identity":
            return {"__identity__": "0x" + v}
        if ty == "bytes":
            return list(v)
        if ty == "f32":
            return shortest_f32(v)
        return v

    for table_spec in (spec, floats):
        entry = {
            "schema": [{"name": n, "algebraic_type": seed.algebraic_type(t)} for n, t in table_spec.columns],
            "rows": [
                [alt(t, v) for t, v in zip(table_spec.types, row, strict=True)]
                for row in plan.expected[table_spec.name]
            ],
        }
        rows, errors = seed.canonical_rows_from_dump(json.loads(json.dumps(entry)))
        assert not errors
        assert seed.table_digest(rows) == expected["tables"][table_spec.name]["checksum"]


def test_the_standin_module_file_is_the_generated_schema() -> None:
    assert seed.STANDIN_MODULE_PATH.read_text(encoding="utf-8") == seed.module_json_text()
    doc = seed.module_document()
    assert all(len(r["args"]) <= seed.MAX_REDUCER_ARGS for r in doc["reducers"])
    from fixtures.spacetimedb_standin.runtime.module_def import load_module

    module = load_module(seed.STANDIN_MODULE_PATH.read_bytes())
    assert [t.name for t in module.tables] == list(seed.ALL_TABLE_NAMES)
    assert module.reducer(seed.SEQ_REDUCER) is not None


RUST_TYPES = {"string": "String", "bytes": "Vec<u8>", "identity": "Identity"}


def _rust_type(ty: str) -> str:
    if ty.startswith("option<"):
        return f"Option<{_rust_type(ty[len('option<') : -1])}>"
    return RUST_TYPES.get(ty, ty)


def test_the_rust_module_declares_the_same_tables_and_reducers() -> None:
    source = seed.RUST_SOURCE_PATH.read_text(encoding="utf-8")
    tables = dict(re.findall(r"#\[table\(name = (\w+), public\)\]\s*pub struct \w+ \{(.*?)\n\}", source, re.S))
    assert list(tables) == list(seed.ALL_TABLE_NAMES)
    for spec in seed.ALL_TABLES:
        fields = re.findall(r"^\s+(\w+): ([^,]+),$", tables[spec.name], re.M)
        assert fields == [(n, _rust_type(t)) for n, t in spec.columns], spec.name
        assert re.search(r"#\[primary_key\]\s*" + spec.columns[0][0] + ":", tables[spec.name])
    reducers = dict(re.findall(r"#\[reducer\]\s*(?:#\[allow\([^)]*\)\]\s*)?pub fn (\w+)\((.*?)\)\s*\{", source, re.S))
    for r in seed.module_document()["reducers"]:
        assert r["name"] in reducers, r["name"]
        params = re.findall(r"(\w+): ([^,]+?),?\s*(?=\w+:|$)", reducers[r["name"]].strip())
        assert params[0] == ("ctx", "&ReducerContext")
        assert params[1:] == [(a["name"], _rust_type(a["type"])) for a in r["args"]], r["name"]
    assert "writer: ctx.sender" in source


def test_the_plan_applied_inside_the_standin_gives_the_expected_checksums(plan: seed.SeedPlan, expected: dict) -> None:
    """Both paths (reducer calls and SQL INSERT) through the stand-in's own executor, then its SQL JSON."""
    from fixtures.spacetimedb_standin.runtime.datastore import Datastore
    from fixtures.spacetimedb_standin.runtime.module_def import load_module
    from fixtures.spacetimedb_standin.runtime.reducers import decode_args, run_reducer
    from fixtures.spacetimedb_standin.runtime.sats import product_type_json, to_json
    from fixtures.spacetimedb_standin.runtime.sqlexec import run_dml, run_select
    from fixtures.spacetimedb_standin.runtime.sqlparse import parse

    module = load_module(seed.STANDIN_MODULE_PATH.read_bytes())
    store = Datastore(module)
    for step in json.loads(plan.to_json_text())["steps"]:
        tx = store.begin()
        if step["kind"] == "call":
            reducer = module.reducer(step["reducer"])
            assert reducer is not None
            run_reducer(tx, reducer, decode_args(reducer, step["args"]), WRITER)
        else:
            assert run_dml(tx, parse(step["sql"]), True).rows_inserted == step["rows"]
    for table in seed.BASELINE_TABLE_NAMES:
        result = run_select(store, parse(f"SELECT * FROM {table}"), True)
        entry = json.loads(
            json.dumps(
                {
                    "schema": product_type_json(result.columns)["elements"],
                    "rows": [
                        [to_json(ty, v) for (_, ty), v in zip(result.columns, row, strict=True)] for row in result.rows
                    ],
                }
            )
        )
        summary = fidelity.table_summary(entry)
        assert summary["decode_errors"] == []
        assert (summary["count"], summary["checksum"]) == (
            expected["tables"][table]["count"],
            expected["tables"][table]["checksum"],
        ), table


def test_the_agent_writes_the_payloads_the_oracle_expects() -> None:
    spec = importlib.util.spec_from_file_location("fidelity_agent_copy", AGENT)
    assert spec is not None and spec.loader is not None
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    assert all(agent.seq_payload(n) == seed.seq_payload(n) for n in (1, 2, 17, 10**6, 2**64 - 1))
    imported = set()
    for node in ast.walk(ast.parse(AGENT.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported and imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


# ------------------------------------------------------------------ the oracle


def test_an_intact_restore_passes(expected: dict, intact: dict) -> None:
    verdict = judge(
        expected,
        intact,
        original=copy.deepcopy(intact),
        timestamps={"restore_started": 10.0, "service_ready": 12.5, "data_verified": 13.0},
    )
    assert verdict["verdict"] == "pass", [p for p in verdict["properties"] if p["ok"] is not True]
    assert all(p["ok"] is True for p in verdict["properties"])
    m = verdict["measurements"]
    assert (m["restored_max_seq"], m["loss_window_seq"], m["loss_window_seconds"]) == (50, 0, 0.0)
    assert (m["rto_seconds"], m["rto_verified_seconds"]) == (2.5, 3.0)


def test_a_restore_missing_a_table_fails_schema_and_counts(expected: dict, intact: dict) -> None:
    restored = copy.deepcopy(intact)
    restored["texts"] = {"schema": None, "rows": None, "status": 400, "error": "no such table: `texts`."}
    verdict = judge(expected, restored)
    assert verdict["verdict"] == "fail"
    schema = prop(verdict, "schema_identical")
    assert schema["ok"] is False and [m["table"] for m in schema["evidence"]["missing_tables"]] == ["texts"]
    baseline = prop(verdict, "baseline_rows_identical")
    assert baseline["ok"] is False and baseline["evidence"]["tables"]["texts"]["present"] is False
    assert prop(verdict, "seq_gap_free")["ok"] is True  # the other properties still say what they saw


def test_a_changed_column_type_fails_schema(expected: dict, intact: dict) -> None:
    restored = copy.deepcopy(intact)
    restored["floats"]["schema"][1]["algebraic_type"] = {"F64": []}
    schema = prop(judge(expected, restored), "schema_identical")
    assert schema["ok"] is False
    assert schema["evidence"]["column_differences"][0]["found"][1] == ["v_f32", "f64"]


def test_a_changed_row_fails_the_checksum_and_shows_it(expected: dict, intact: dict) -> None:
    restored = copy.deepcopy(intact)
    restored["texts"]["rows"][3][1] = "changed"
    verdict = judge(expected, restored)
    baseline = prop(verdict, "baseline_rows_identical")
    assert verdict["verdict"] == "fail" and baseline["ok"] is False
    info = baseline["evidence"]["tables"]["texts"]
    assert info["restored_count"] == info["expected_count"] and not info["identical"]
    assert info["missing_count"] == 1 and '"changed"' in info["unexpected_examples"][0]
    assert all(t["identical"] for name, t in baseline["evidence"]["tables"].items() if name != "texts")


def test_negative_zero_turned_positive_is_a_change(expected: dict, intact: dict) -> None:
    restored = copy.deepcopy(intact)
    row = next(r for r in restored["floats"]["rows"] if str(r[2]) == "-0.0")
    row[2] = 0.0
    assert prop(judge(expected, restored), "baseline_rows_identical")["ok"] is False


def test_a_seq_gap_fails_gap_free(expected: dict, plan: seed.SeedPlan) -> None:
    restored = dump_of(plan, [n for n in range(1, 51) if n != 20])
    verdict = judge(expected, restored)
    gap = prop(verdict, "seq_gap_free")
    assert verdict["verdict"] == "fail" and gap["ok"] is False and gap["evidence"]["missing"] == [20]
    assert prop(verdict, "acked_writes_present")["ok"] is False  # seq 20 was acknowledged before the snapshot


def test_a_missing_acknowledged_write_fails(expected: dict, plan: seed.SeedPlan) -> None:
    restored = dump_of(plan, list(range(1, 41)))  # a gap-free prefix, but shorter than what was acknowledged
    verdict = judge(expected, restored)
    assert prop(verdict, "seq_gap_free")["ok"] is True
    acked = prop(verdict, "acked_writes_present")
    assert verdict["verdict"] == "fail" and acked["ok"] is False
    assert acked["evidence"]["missing_acked_count"] == 5
    m = verdict["measurements"]
    assert m["loss_window_seq"] == 10 and m["loss_window_seconds"] == pytest.approx(0.10, abs=1e-6)


def test_writes_after_the_snapshot_point_may_be_missing(expected: dict, plan: seed.SeedPlan) -> None:
    restored = dump_of(plan, list(range(1, 46)))
    verdict = judge(expected, restored)
    assert verdict["verdict"] == "pass"
    assert verdict["measurements"]["loss_window_seq"] == 5


def test_a_row_that_was_never_written_fails(expected: dict, plan: seed.SeedPlan) -> None:
    restored = dump_of(plan, list(range(1, 52)))  # seq 51 was never attempted
    verdict = judge(expected, restored)
    phantom = prop(verdict, "no_phantom_writes")
    assert verdict["verdict"] == "fail" and phantom["ok"] is False and phantom["evidence"]["never_written"] == [51]


def test_an_unacknowledged_attempt_that_committed_is_not_a_phantom(expected: dict, plan: seed.SeedPlan) -> None:
    restored = dump_of(plan, list(range(1, 52)))
    verdict = judge(expected, restored, ack_log=ack_log(range(1, 51), unacked=[51, 51]))
    assert verdict["verdict"] == "pass"
    assert verdict["measurements"]["max_attempted_seq"] == 51


def test_a_wrong_payload_or_writer_fails(expected: dict, intact: dict) -> None:
    restored = copy.deepcopy(intact)
    restored["seq"]["rows"][7][1] = "seq 8 forged"
    phantom = prop(judge(expected, restored), "no_phantom_writes")
    assert phantom["ok"] is False and phantom["evidence"]["wrong_payload"][0]["seq"] == 8
    other = prop(judge(expected, intact, writer_identity="c200" + "00" * 30), "no_phantom_writes")
    assert other["ok"] is False and len(other["evidence"]["wrong_writer"]) == 3


def test_token_failure_fails_and_no_token_check_is_incomplete(expected: dict, intact: dict) -> None:
    bad = {"ok": False, "checks": [{"name": "verify", "status": 401, "expected": 204, "ok": False}]}
    assert prop(judge(expected, intact, token_check=bad), "token_valid")["ok"] is False
    assert judge(expected, intact, token_check=bad)["verdict"] == "fail"
    assert judge(expected, intact, token_check=None)["verdict"] == "incomplete"


def test_a_lost_original_row_is_reported_against_the_original(expected: dict, intact: dict) -> None:
    original = copy.deepcopy(intact)
    restored = copy.deepcopy(intact)
    original["seq"]["rows"].append([51, seed.seq_payload(51), [hex(int(WRITER, 16))]])
    verdict = judge(expected, restored, original=original, ack_log=ack_log(range(1, 52)), last_acked_before_snapshot=45)
    present = prop(verdict, "original_rows_present")
    assert present["ok"] is False and present["evidence"]["missing_seq"] == [51]


def test_the_ack_log_tolerates_a_torn_last_line_and_finds_the_snapshot_point() -> None:
    text = ack_log(range(1, 11)) + '{"seq": 11, "ack'
    log = fidelity.parse_ack_log(text)
    assert (len(log.entries), log.bad_lines, log.last_acked_seq) == (10, 1, 10)
    assert fidelity.last_acked_before(log, 1000.0 + 4 * 0.01 + 0.006) == 5
    assert fidelity.last_acked_before(log, 0.0) is None


def test_a_live_copy_is_described_not_judged(expected: dict, intact: dict, plan: seed.SeedPlan) -> None:
    failed = fidelity.judge_live_copy(
        expected=expected, started=False, server_output="x\ncommitlog: damaged record at byte 77\n"
    )
    assert failed["kind"] == "evidence" and "ok" not in failed and "verdict" not in failed
    assert failed["outcomes"] == ["server-failed-to-start", "server-log-reports-damage"]
    assert failed["server_log_markers"] == ["commitlog: damaged record at byte 77"]
    torn = dump_of(plan, [n for n in range(1, 46) if n != 9])
    torn["identities"]["rows"].pop()
    seen = fidelity.judge_live_copy(
        expected=expected,
        started=True,
        restored=torn,
        ack_log=ack_log(range(1, 51)),
        copy_started_at=1000.0 + 30 * 0.01 + 0.006,
        copy_finished_at=2000.0,
    )
    assert seen["outcomes"] == ["baseline-rows-missing-or-changed", "acked-writes-missing", "seq-gaps"]
    assert seen["seq"]["acked_before_copy"] == 31 and seen["seq"]["missing"] == [9]
    fine = fidelity.judge_live_copy(expected=expected, started=True, restored=intact, ack_log=ack_log(range(1, 51)))
    assert fine["outcome"] == "consistent"


# ------------------------------------------------------------------ the generator records, the suite judges


def _recorded_drill(root: Path, expected: dict[str, Any], restored: dict[str, Any]) -> dict[str, Any]:
    """A drill's history as the generator leaves it: no verdict, its files next to it (relative paths)."""
    from harness.scenarios.restore_drill import WORK_NAME

    work = root / WORK_NAME
    work.mkdir(parents=True)
    (work / "expected.json").write_text(json.dumps(expected))
    (work / "restored.json").write_text(json.dumps(restored))
    (work / "ack.jsonl").write_text(ack_log(range(1, 51)))
    (work / "livecopy-0.json").write_text(json.dumps(restored))
    history = {"applicable": True, "events": [{"name": "verify"}], "last_acked_before_snapshot": 45,
               "token_check": TOKEN_OK, "writer_identity": WRITER, "timestamps": {},
               "files": {"expected": f"{WORK_NAME}/expected.json", "restored": f"{WORK_NAME}/restored.json",
                         "ack_log": f"{WORK_NAME}/ack.jsonl"},
               "live_copy_results": [{"started": True, "restored_file": f"{WORK_NAME}/livecopy-0.json",
                                      "copy_started_at": 1000.0, "copy_finished_at": 1000.2}]}
    (root / "history-backup_restore.json").write_text(json.dumps(history))
    return history


def test_a_recorded_drill_is_judged_from_its_files_not_from_a_stored_verdict(
        tmp_path: Path, expected: dict[str, Any], intact: dict[str, Any], plan: seed.SeedPlan) -> None:
    from harness.scenarios.restore_drill import judged, summarize

    history = _recorded_drill(tmp_path / "good", expected, intact)
    assert "verdict" not in history  # the generator stores no verdict
    verdict = judged(history, tmp_path / "good")["verdict"]
    assert verdict == judge(expected, intact, timestamps={})  # the same oracle on the same inputs
    assert summarize(history, tmp_path / "good")["restore"]["live_copies"][0]["outcome"]
    # the same recording moved elsewhere (a report dir) judges the same: paths are relative
    moved = tmp_path / "moved"
    (tmp_path / "good").rename(moved)
    assert judged(history, moved)["verdict"] == verdict
    # a restore that lost a table: the judge sees it from the recorded dump
    lossy = dict(intact)
    lossy["floats"] = {**lossy["floats"], "rows": []}
    bad = judged(_recorded_drill(tmp_path / "bad", expected, lossy), tmp_path / "bad")["verdict"]
    assert prop(bad, "baseline_rows_identical")["ok"] is False


def test_each_property_is_a_function_the_verdict_names(expected: dict[str, Any], intact: dict[str, Any]) -> None:
    verdict = judge(expected, intact)
    assert [p["id"] for p in verdict["properties"]] == [f.__name__ for f in fidelity.PROPERTIES]
    assert all(p["checker"] == f"harness.fidelity.{p['id']}" for p in verdict["properties"])
    assert all((ast.get_source_segment(SOURCE, node) or "").count("\n") < 80 for node in ast.walk(ast.parse(SOURCE))
               if isinstance(node, ast.FunctionDef) and node.name in {f.__name__ for f in fidelity.PROPERTIES})


SOURCE = (ROOT / "harness" / "fidelity.py").read_text()


def test_acknowledged_writes_inside_the_durability_window_may_be_lost_and_are_counted(
        expected: dict, plan: seed.SeedPlan) -> None:
    """SpacetimeDB acknowledges before it flushes: with the server's window (0.1 s here, plus the oracle's slack)
    only writes acknowledged at least that long before the snapshot must be restored. The snapshot instant is the
    later of the clock read before it and the last acknowledgement counted before it (the vm drill reads the
    guest clock first, then the writer's log)."""
    durable = {"durability_window": 0.1, "snapshot_time": 1000.2}
    bound = 0.1 + fidelity.DURABILITY_SLACK
    instant = 1000.0 + 44 * 0.01 + 0.005  # seq 45's acknowledgement, after the clock read
    verdict = judge(expected, dump_of(plan, list(range(1, 31))), **durable)
    acked = prop(verdict, "acked_writes_present")
    assert acked["ok"] is True, acked["summary"]
    required = [n for n in range(1, 46) if 1000.0 + (n - 1) * 0.01 + 0.005 <= instant - bound]
    assert acked["evidence"]["must_be_present_up_to_seq"] == required[-1]
    assert acked["evidence"]["acked_unflushed_lost"] == 15  # seqs 31..45
    assert 0 < acked["evidence"]["measured_unflushed_window_seconds"] <= bound
    # losing a write acknowledged before the window is still red
    early = prop(judge(expected, dump_of(plan, list(range(1, required[-1]))), **durable), "acked_writes_present")
    assert early["ok"] is False and early["evidence"]["missing_acked"] == [required[-1]]
    # without the window every acknowledged write is required, as before
    assert prop(judge(expected, dump_of(plan, list(range(1, 31)))), "acked_writes_present")["ok"] is False
