"""The restore drill's oracle: judges a recorded history (baseline, dumps, the writer's log) as data.

Pure functions; no I/O beyond their arguments. Inputs are the JSON documents of
`fixtures/conformance_seed.py` and `harness/agents/fidelity_agent.py`:

- `expected`: `expected_baseline(plan)` = {"schema": {table: [{"name", "type"}]},
  "tables": {table: {"count", "checksum", "rows"?: [canonical row]}}} (the `seq` table is in the schema only);
- a dump (`fidelity_agent.py dump`): {table: {"schema": [{"name", "algebraic_type"}] | null,
  "rows": [[...]] | null, "status", "error"?}};
- the writer's acknowledgement log (`fidelity_agent.py write --log`): JSON lines
  {"seq", "acked", "status", "t", "t0"[, "error"][, "present"]}, as text, lines or dicts;
- `token_check`: the output of `fidelity_agent.py verify-token` ({"ok", "identity", "checks": [...]});
- `timestamps`: wall-clock seconds (time.time()) the lab recorded, any of
  snapshot_started, snapshot_finished, restore_started, service_ready, data_verified.

`judge_restore` returns {"verdict": "pass"|"fail"|"incomplete", "ok": bool, "properties": [{"id", "ok"
(True/False/None = not decided), "required", "summary", "evidence"}], "measurements": {...}}; property ids:
schema_identical, baseline_rows_identical, original_rows_present, seq_gap_free, acked_writes_present,
no_phantom_writes, token_valid. `judge_live_copy` describes what a copy of the live data directory taken
while writing turned out to be (evidence, not a verdict).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeGuard

from fixtures.conformance_seed import (
    SEQ_TABLE,
    DecodeError,
    canonical_rows_from_dump,
    decode_sql_value,
    dump_columns,
    seq_payload,
    table_digest,
)

SEQ = SEQ_TABLE.name
MAX_LISTED = 10
TIMESTAMP_KEYS = ("snapshot_started", "snapshot_finished", "restore_started", "service_ready", "data_verified")


# ------------------------------------------------------------------ the writer's log


@dataclass
class AckLog:
    entries: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0

    @property
    def acked(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("acked") is True]

    @property
    def ack_times(self) -> dict[int, float]:
        """seq -> time its acknowledgement arrived (the first one, if a seq was acked twice)."""
        times: dict[int, float] = {}
        for entry in self.acked:
            times.setdefault(int(entry["seq"]), float(entry.get("t") or 0.0))
        return times

    @property
    def attempted(self) -> set[int]:
        return {int(e["seq"]) for e in self.entries}

    @property
    def last_acked_seq(self) -> int | None:
        seqs = [int(e["seq"]) for e in self.acked]
        return max(seqs) if seqs else None

    @property
    def max_attempted_seq(self) -> int | None:
        return max(self.attempted) if self.entries else None

    def attempt_time(self, seq: int) -> float | None:
        times = [float(e.get("t") or 0.0) for e in self.entries if int(e["seq"]) == seq]
        return max(times) if times else None


def parse_ack_log(source: AckLog | str | Iterable[str] | Iterable[dict[str, Any]] | None) -> AckLog:
    """Parse the writer's JSON-lines log; unparsable lines (a torn last line) are counted, not fatal."""
    if isinstance(source, AckLog):
        return source
    if source is None:
        return AckLog()
    items: Iterable[Any] = source.splitlines() if isinstance(source, str) else source
    log = AckLog()
    for item in items:
        entry = item
        if isinstance(item, str):
            if not item.strip():
                continue
            try:
                entry = json.loads(item)
            except ValueError:
                log.bad_lines += 1
                continue
        if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int) or isinstance(entry["seq"], bool):
            log.bad_lines += 1
            continue
        log.entries.append(entry)
    return log


def last_acked_before(log: AckLog | str | Iterable[Any], when: float) -> int | None:
    """The highest seq acknowledged at or before `when` (e.g. the moment the snapshot began)."""
    parsed = parse_ack_log(log)
    seqs = [int(e["seq"]) for e in parsed.acked if float(e.get("t") or 0.0) <= when]
    return max(seqs) if seqs else None


# ------------------------------------------------------------------ helpers


def _prop(pid: str, ok: bool | None, summary: str, evidence: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"id": pid, "ok": ok, "required": required, "summary": summary, "evidence": evidence}


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table_present(entry: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(entry, dict) and entry.get("schema") is not None and entry.get("rows") is not None


def _schema_of(entry: Any) -> list[list[str]] | None:
    return [[n, t] for n, t in dump_columns(entry)] if _table_present(entry) else None


def compare_schema(expected_schema: dict[str, list[dict[str, str]]], dump: dict[str, Any]) -> dict[str, Any]:
    """{"missing_tables": [...], "column_differences": [{"table", "expected", "found"}]}."""
    missing = []
    differences = []
    for table, columns in expected_schema.items():
        entry = dump.get(table)
        found = _schema_of(entry)
        if found is None:
            missing.append(
                {
                    "table": table,
                    "status": (entry or {}).get("status"),
                    "error": _short(str((entry or {}).get("error") or "not in the dump")),
                }
            )
            continue
        wanted = [[c["name"], c["type"]] for c in columns]
        if found != wanted:
            differences.append({"table": table, "expected": wanted, "found": found})
    return {"missing_tables": missing, "column_differences": differences}


def table_summary(entry: Any) -> dict[str, Any]:
    """{"count", "checksum", "rows" (canonical), "decode_errors"} of one dumped table."""
    rows, errors = canonical_rows_from_dump(entry)
    return {"count": len(rows), "checksum": table_digest(rows), "rows": rows, "decode_errors": errors}


def _row_diff(wanted: list[str], found: list[str], limit: int) -> dict[str, Any]:
    want_counts, found_counts = Counter(wanted), Counter(found)
    missing = sorted((want_counts - found_counts).elements())
    unexpected = sorted((found_counts - want_counts).elements())
    return {
        "missing_count": len(missing),
        "unexpected_count": len(unexpected),
        "missing_examples": [_short(r) for r in missing[:limit]],
        "unexpected_examples": [_short(r) for r in unexpected[:limit]],
    }


# ------------------------------------------------------------------ the seq table


@dataclass
class SeqRows:
    present: bool
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"seq", "payload", "writer"}
    errors: list[str] = field(default_factory=list)

    @property
    def seqs(self) -> list[int]:
        return sorted(int(r["seq"]) for r in self.rows if isinstance(r.get("seq"), int))


def seq_rows(dump: dict[str, Any]) -> SeqRows:
    entry = dump.get(SEQ)
    if not _table_present(entry):
        return SeqRows(False)
    columns = dump_columns(entry)
    result = SeqRows(True)
    for raw in entry["rows"]:
        try:
            if not isinstance(raw, list) or len(raw) != len(columns):
                raise DecodeError(f"row shape {raw!r}")
            result.rows.append({name: decode_sql_value(ty, v) for (name, ty), v in zip(columns, raw, strict=True)})
        except DecodeError as exc:
            result.errors.append(_short(str(exc)))
    return result


def _gaps(seqs: list[int], start: int, top: int) -> list[int]:
    present = set(seqs)
    gaps = []
    for value in range(start, top + 1):
        if value not in present:
            gaps.append(value)
            if len(gaps) >= MAX_LISTED:
                break
    return gaps


# ------------------------------------------------------------------ judge a restore


@dataclass
class RestoreInputs:
    """What the oracle judges: the drill's recording of one restore."""

    expected: dict[str, Any]
    restored: dict[str, Any]
    log: AckLog
    last_acked_before_snapshot: int | None
    max_attempted: int | None
    original: dict[str, Any] | None
    token_check: dict[str, Any] | None
    seq_start: int
    writer_identity: str | None
    max_examples: int
    # the server's durability window (s between flush+fsync; acknowledged writes inside it may be lost) and the
    # snapshot instant on the writer's clock; None = judged as if every acknowledgement were durable
    durability_window: float | None = None
    snapshot_time: float | None = None

    @cached_property
    def restored_seq(self) -> SeqRows:
        return seq_rows(self.restored)


def schema_identical(inp: RestoreInputs) -> dict[str, Any]:
    """The restored tables and column types are the baseline's (and the original dump's, when given)."""
    expected, restored, original = inp.expected, inp.restored, inp.original
    schema = compare_schema(expected.get("schema") or {}, restored)
    original_schema = None
    if original is not None:
        original_schema = [
            {"table": t, "original": _schema_of(original.get(t)), "restored": _schema_of(restored.get(t))}
            for t in expected.get("schema") or {}
            if _schema_of(original.get(t)) != _schema_of(restored.get(t))
        ]
    schema_ok = not schema["missing_tables"] and not schema["column_differences"] and not original_schema
    parts = []
    if schema["missing_tables"]:
        parts.append("missing tables: " + ", ".join(m["table"] for m in schema["missing_tables"]))
    if schema["column_differences"]:
        parts.append("columns differ: " + ", ".join(d["table"] for d in schema["column_differences"]))
    if original_schema:
        parts.append("differs from the original: " + ", ".join(d["table"] for d in original_schema))
    return (
        _prop(
            "schema_identical",
            schema_ok,
            f"{len(expected.get('schema') or {})} tables, names and column types identical"
            if schema_ok
            else "; ".join(parts),
            {**schema, "original_differences": original_schema},
        )
    )


def baseline_rows_identical(inp: RestoreInputs) -> dict[str, Any]:
    """Every baseline table is restored with its row count and content checksum."""
    expected, restored, max_examples = inp.expected, inp.restored, inp.max_examples
    per_table = {}
    mismatched = []
    total_rows = 0
    for table, want in (expected.get("tables") or {}).items():
        entry = restored.get(table)
        if not _table_present(entry):
            per_table[table] = {"expected_count": want["count"], "restored_count": None, "present": False}
            mismatched.append(f"{table} (missing)")
            continue
        found = table_summary(entry)
        same = found["count"] == want["count"] and found["checksum"] == want["checksum"]
        info: dict[str, Any] = {
            "expected_count": want["count"],
            "restored_count": found["count"],
            "expected_checksum": want["checksum"],
            "restored_checksum": found["checksum"],
            "identical": same,
        }
        if found["decode_errors"]:
            info["decode_errors"] = found["decode_errors"][:max_examples]
        if not same:
            if "rows" in want:
                info.update(_row_diff(want["rows"], found["rows"], max_examples))
            mismatched.append(
                f"{table} ({found['count']} rows, expected {want['count']}"
                + (", content differs" if found["count"] == want["count"] else "")
                + ")"
            )
        total_rows += found["count"]
        per_table[table] = info
    return (
        _prop(
            "baseline_rows_identical",
            not mismatched,
            f"{len(per_table)} tables, {total_rows} baseline rows identical (count and checksum)"
            if not mismatched
            else "differs: " + ", ".join(mismatched),
            {"tables": per_table},
        )
    )


def original_rows_present(inp: RestoreInputs) -> dict[str, Any]:
    """Every row of the dump taken before the snapshot (when given) is in the restore."""
    expected, restored, original, max_examples = inp.expected, inp.restored, inp.original, inp.max_examples
    restored_seq = inp.restored_seq
    if original is None:
        return (_prop("original_rows_present", None, "no dump of the original was given", {}, required=False))
    else:
        differing = []
        for table in expected.get("tables") or {}:
            if not _table_present(original.get(table)):
                differing.append({"table": table, "problem": "not in the original dump"})
                continue
            if not _table_present(restored.get(table)):
                differing.append({"table": table, "problem": "not in the restored dump"})
                continue
            before, after = table_summary(original[table]), table_summary(restored[table])
            if before["checksum"] != after["checksum"]:
                differing.append(
                    {"table": table, "problem": "rows differ", **_row_diff(before["rows"], after["rows"], max_examples)}
                )
        original_seq = seq_rows(original)
        lost: list[int] = []
        if original_seq.present:
            after_keys = {(r.get("seq"), r.get("payload"), r.get("writer")) for r in restored_seq.rows}
            lost = sorted(
                int(r["seq"])
                for r in original_seq.rows
                if (r.get("seq"), r.get("payload"), r.get("writer")) not in after_keys
            )
        ok = not differing and not lost
        return (
            _prop(
                "original_rows_present",
                ok,
                "every row of the original dump is in the restored database"
                if ok
                else f"{len(differing)} baseline tables differ from the original; {len(lost)} seq rows of the "
                "original are missing",
                {
                    "tables": differing,
                    "missing_seq": lost[:MAX_LISTED],
                    "missing_seq_count": len(lost),
                    "original_seq_rows": len(original_seq.rows),
                },
                required=False,
            )
        )


def seq_gap_free(inp: RestoreInputs) -> dict[str, Any]:
    """The restored seq rows are exactly seq_start..max, no gap, duplicate or value below the start."""
    restored = inp.restored
    max_examples = inp.max_examples
    restored_seq, seq_start = inp.restored_seq, inp.seq_start
    seqs = restored_seq.seqs
    top = seqs[-1] if seqs else seq_start - 1
    if not restored_seq.present:
        entry = restored.get(SEQ) or {}
        return (
            _prop(
                "seq_gap_free",
                False,
                "the seq table is missing from the restored database",
                {"status": entry.get("status"), "error": _short(str(entry.get("error") or ""))},
            )
        )
    else:
        duplicates = sorted(v for v, n in Counter(seqs).items() if n > 1)
        below = [v for v in seqs if v < seq_start]
        gaps = _gaps(seqs, seq_start, top)
        ok = not gaps and not duplicates and not below and not restored_seq.errors
        return (
            _prop(
                "seq_gap_free",
                ok,
                f"seq rows are exactly {seq_start}..{top} ({len(seqs)} rows)"
                if ok
                else f"seq rows are not a gap-free prefix {seq_start}..{top}: {len(seqs)} rows, "
                f"first missing {gaps[:5]}",
                {
                    "count": len(seqs),
                    "max_seq": top if seqs else None,
                    "missing": gaps,
                    "duplicates": duplicates[:MAX_LISTED],
                    "below_start": below[:MAX_LISTED],
                    "decode_errors": restored_seq.errors[:max_examples],
                },
            )
        )


# what a flush+fsync and the writer's and the snapshot's clock reads may add to the server's flush interval
DURABILITY_SLACK = 0.25


def acked_writes_present(inp: RestoreInputs) -> dict[str, Any]:
    """Every write acknowledged before the snapshot began is in the restore, as far as the server promises: with a
    durability window (SpacetimeDB acknowledges from memory and flushes on an interval), every write acknowledged
    at least one window before the snapshot; the acknowledged writes lost inside the window are counted."""
    log, last_acked_before_snapshot = inp.log, inp.last_acked_before_snapshot
    restored_seq, seq_start = inp.restored_seq, inp.seq_start
    seqs = restored_seq.seqs
    top = seqs[-1] if seqs else seq_start - 1
    present = set(seqs)
    if last_acked_before_snapshot is None:
        return (
            _prop("acked_writes_present", None, "the last write acknowledged before the snapshot was not given", {})
        )
    times = log.ack_times
    acked_before = sorted(s for s in times if s <= last_acked_before_snapshot)
    window, snapshot_time = inp.durability_window, inp.snapshot_time
    instant = None
    if window is None or snapshot_time is None:
        required, allowed = acked_before, []
    else:
        # the snapshot began after `snapshot_time` was read and after the last write counted before it was
        # acknowledged: the later of the two is still no later than the snapshot, so judging from it is sound
        instant = max(snapshot_time, times.get(last_acked_before_snapshot, snapshot_time))
        bound = window + DURABILITY_SLACK
        required = [s for s in acked_before if times[s] <= instant - bound]
        allowed = [s for s in acked_before if times[s] > instant - bound]
    absent = [s for s in required if s not in present]
    lost_in_window = [s for s in allowed if s not in present]
    measured = round(instant - min(times[s] for s in lost_in_window), 6) if (
        lost_in_window and instant is not None) else 0.0
    top_required = required[-1] if required else seq_start - 1
    ok = restored_seq.present and top >= top_required and not absent
    promise = (f"acknowledged at least the server's durability window ({window} s, plus {DURABILITY_SLACK} s for the "
               f"flush itself and clock reads) before the snapshot"
               if window is not None and snapshot_time is not None else "acknowledged before the snapshot")
    return (
        _prop(
            "acked_writes_present",
            ok,
            f"all writes {promise} (up to seq {top_required}) are present"
            + (f"; {len(lost_in_window)} acknowledged inside the window were lost (the oldest "
               f"{measured} s before the snapshot)" if lost_in_window else "")
            if ok
            else f"restored seq rows end at {top if restored_seq.present else 'nothing'}; of the writes {promise} "
            f"(up to seq {top_required}), {len(absent)} are missing",
            {
                "last_acked_before_snapshot": last_acked_before_snapshot,
                "durability_window_seconds": window,
                "snapshot_instant_at_least": instant,
                "durability_slack_seconds": DURABILITY_SLACK if window is not None else None,
                "must_be_present_up_to_seq": top_required,
                "restored_max_seq": top,
                "missing_acked": absent[:MAX_LISTED],
                "missing_acked_count": len(absent),
                "acked_unflushed_lost": len(lost_in_window),
                "acked_unflushed_lost_seqs": lost_in_window[:MAX_LISTED],
                "measured_unflushed_window_seconds": measured,
            },
        )
    )


def no_phantom_writes(inp: RestoreInputs) -> dict[str, Any]:
    """No restored seq row was never written: attempted by the writer, with its payload and writer."""
    log, max_attempted, writer_identity = inp.log, inp.max_attempted, inp.writer_identity
    max_examples = inp.max_examples
    restored_seq, seq_start = inp.restored_seq, inp.seq_start
    seqs = restored_seq.seqs
    limit = max_attempted if max_attempted is not None else seq_start - 1
    attempted = log.attempted
    never = [s for s in seqs if s > limit or s < seq_start or (attempted and s not in attempted)]
    bad_payload = [
        r for r in restored_seq.rows if isinstance(r.get("seq"), int) and r.get("payload") != seq_payload(r["seq"])
    ]
    bad_writer = []
    if writer_identity is not None:
        want_writer = writer_identity.lower().removeprefix("0x").rjust(64, "0")
        bad_writer = [r for r in restored_seq.rows if r.get("writer") != want_writer]
    ok = restored_seq.present and not never and not bad_payload and not bad_writer
    return (
        _prop(
            "no_phantom_writes",
            ok if restored_seq.present else None,
            f"every seq row was written by the writer (max attempted {max_attempted}) with its payload"
            if ok
            else (
                "the seq table is missing"
                if not restored_seq.present
                else f"{len(never)} rows never attempted, {len(bad_payload)} payloads and "
                f"{len(bad_writer)} writers differ"
            ),
            {
                "max_attempted": max_attempted,
                "never_written": never[:MAX_LISTED],
                "wrong_payload": [
                    {"seq": r["seq"], "payload": _short(str(r.get("payload")), 100), "expected": seq_payload(r["seq"])}
                    for r in bad_payload[:max_examples]
                ],
                "wrong_writer": [{"seq": r.get("seq"), "writer": r.get("writer")} for r in bad_writer[:max_examples]],
            },
        )
    )


def token_valid(inp: RestoreInputs) -> dict[str, Any]:
    """A token issued before the snapshot still authenticates against the restore."""
    token_check = inp.token_check
    if token_check is None:
        return (_prop("token_valid", None, "the token was not checked", {}))
    else:
        ok = bool(token_check.get("ok"))
        failed = [c.get("name") for c in token_check.get("checks") or [] if not c.get("ok")]
        return (
            _prop(
                "token_valid",
                ok,
                "the token issued before the snapshot still authenticates"
                if ok
                else "token checks failed: " + ", ".join(str(f) for f in failed),
                {"identity": token_check.get("identity"), "checks": token_check.get("checks") or []},
            )
        )


# the oracle's properties, in the order the report lists them: each a function of the recording
PROPERTIES = (schema_identical, baseline_rows_identical, original_rows_present, seq_gap_free, acked_writes_present,
              no_phantom_writes, token_valid)


def judge_restore(
    *,
    expected: dict[str, Any],
    restored: dict[str, Any],
    ack_log: AckLog | str | Iterable[Any] | None,
    last_acked_before_snapshot: int | None,
    max_attempted: int | None = None,
    original: dict[str, Any] | None = None,
    token_check: dict[str, Any] | None = None,
    timestamps: dict[str, float] | None = None,
    seq_start: int = 1,
    writer_identity: str | None = None,
    max_examples: int = 3,
    durability_window: float | None = None,
    snapshot_time: float | None = None,
) -> dict[str, Any]:
    """Judge the restored database against the baseline, the original (optional) and the writer's log: each of
    PROPERTIES in turn (every property names the function that judged it), then the measurements.

    `last_acked_before_snapshot`: the seq of the last write acknowledged before the snapshot began
    (`last_acked_before(log, timestamps["snapshot_started"])`); None = the drill did not record it.
    `max_attempted`: the highest seq the writer attempted (default: from the log).
    `durability_window`, `snapshot_time`: the server's flush interval and the snapshot instant on the writer's
    clock; with both, writes acknowledged inside the window before the snapshot may be missing (counted).
    """
    log = parse_ack_log(ack_log)
    inputs = RestoreInputs(expected=expected, restored=restored, log=log,
                           last_acked_before_snapshot=last_acked_before_snapshot,
                           max_attempted=log.max_attempted_seq if max_attempted is None else max_attempted,
                           original=original, token_check=token_check, seq_start=seq_start,
                           writer_identity=writer_identity, max_examples=max_examples,
                           durability_window=durability_window, snapshot_time=snapshot_time)
    properties = [{**judge(inputs), "checker": f"harness.fidelity.{judge.__name__}"} for judge in PROPERTIES]
    measurements = _measurements(
        log, inputs.restored_seq, seq_start, last_acked_before_snapshot, inputs.max_attempted, timestamps or {}
    )
    if any(p["ok"] is False for p in properties):
        verdict = "fail"
    elif any(p["ok"] is None and p["required"] for p in properties):
        verdict = "incomplete"
    else:
        verdict = "pass"
    return {"verdict": verdict, "ok": verdict == "pass", "properties": properties, "measurements": measurements}


def _measurements(
    log: AckLog,
    restored: SeqRows,
    seq_start: int,
    last_acked_snapshot: int | None,
    max_attempted: int | None,
    timestamps: dict[str, float],
) -> dict[str, Any]:
    seqs = restored.seqs
    top = seqs[-1] if seqs else None
    ack_times = log.ack_times
    last_acked = log.last_acked_seq
    out: dict[str, Any] = {
        "restored_seq_rows": len(seqs),
        "restored_max_seq": top,
        "last_acked_seq": last_acked,
        "last_acked_before_snapshot": last_acked_snapshot,
        "max_attempted_seq": max_attempted,
        "ack_log": {
            "entries": len(log.entries),
            "acked": len(ack_times),
            "unacked_attempts": len(log.entries) - len(log.acked),
            "bad_lines": log.bad_lines,
        },
    }
    if last_acked_snapshot is not None and top is not None:
        out["restored_beyond_snapshot_point"] = top - last_acked_snapshot
    # loss window: acknowledged writes the restore does not have, in seq count and in seconds
    present = set(seqs)
    lost = [s for s in ack_times if s not in present]
    out["loss_window_seq"] = len(lost)
    last_acked_time = ack_times.get(last_acked) if last_acked is not None else None
    if top is not None:
        restored_time = ack_times.get(top, log.attempt_time(top))
    else:
        first = min((float(e.get("t0") or e.get("t") or 0.0) for e in log.entries), default=None)
        restored_time = first
    out["last_acked_time"] = last_acked_time
    out["last_restored_write_time"] = restored_time
    if last_acked_time is None:
        out["loss_window_seconds"] = 0.0
    elif restored_time is None:
        out["loss_window_seconds"] = None
    else:
        out["loss_window_seconds"] = round(max(0.0, last_acked_time - restored_time), 6) if lost else 0.0
    # RTO and friends from the lab's timestamps
    given = {k: float(v) for k, v in timestamps.items() if isinstance(v, (int, float))}
    out["timestamps"] = given

    def delta(a: str, b: str) -> float | None:
        return round(given[b] - given[a], 6) if a in given and b in given else None

    out["snapshot_seconds"] = delta("snapshot_started", "snapshot_finished")
    out["rto_seconds"] = delta("restore_started", "service_ready")
    out["rto_verified_seconds"] = delta("restore_started", "data_verified")
    return out


# ------------------------------------------------------------------ a copy of the live directory


_DAMAGE = re.compile(r"torn|corrupt|checksum|truncat|damaged|panic|traceback|out of order|error", re.IGNORECASE)


def judge_live_copy(
    *,
    expected: dict[str, Any],
    started: bool,
    restored: dict[str, Any] | None = None,
    ack_log: AckLog | str | Iterable[Any] | None = None,
    copy_started_at: float | None = None,
    copy_finished_at: float | None = None,
    server_output: str = "",
    seq_start: int = 1,
) -> dict[str, Any]:
    """What a server started on a copy of the live data directory (taken while writing) shows.

    Evidence, not pass/fail: {"kind": "evidence", "outcome": first of "outcomes", "outcomes": [...],
    "observations": [sentences], "server_log_markers": [lines], "baseline": {...}, "seq": {...}}.
    Outcomes: server-failed-to-start, server-log-reports-damage, unreadable, baseline-rows-missing-or-changed,
    seq-table-missing, acked-writes-missing, seq-gaps, consistent.
    """
    log = parse_ack_log(ack_log)
    markers = [_short(line.strip(), 240) for line in server_output.splitlines() if _DAMAGE.search(line)][:20]
    outcomes: list[str] = []
    observations: list[str] = []
    result: dict[str, Any] = {
        "kind": "evidence",
        "server_started": started,
        "server_log_markers": markers,
        "copy_started_at": copy_started_at,
        "copy_finished_at": copy_finished_at,
    }
    if copy_started_at is not None and copy_finished_at is not None:
        result["copy_seconds"] = round(copy_finished_at - copy_started_at, 6)
    if not started:
        outcomes.append("server-failed-to-start")
        observations.append("the server did not start on the copied directory")
    if markers:
        outcomes.append("server-log-reports-damage")
        observations.append(f"the server's output has {len(markers)} lines about damage or errors")
    if started and (restored is None or not any(_table_present(e) for e in restored.values())):
        outcomes.append("unreadable")
        observations.append("the server started but the tables could not be read")
    if started and restored is not None:
        baseline = {}
        for table, want in (expected.get("tables") or {}).items():
            entry = restored.get(table)
            if not _table_present(entry):
                baseline[table] = {"expected_count": want["count"], "restored_count": None, "identical": False}
                continue
            found = table_summary(entry)
            baseline[table] = {
                "expected_count": want["count"],
                "restored_count": found["count"],
                "identical": found["checksum"] == want["checksum"],
            }
        result["baseline"] = baseline
        changed = [t for t, b in baseline.items() if not b["identical"]]
        if changed:
            outcomes.append("baseline-rows-missing-or-changed")
            observations.append("baseline tables missing or changed: " + ", ".join(changed))
        rows = seq_rows(restored)
        seqs = rows.seqs
        top = seqs[-1] if seqs else seq_start - 1
        gaps = _gaps(seqs, seq_start, top)
        acked_before = None if copy_started_at is None else last_acked_before(log, copy_started_at)
        acked_during = None if copy_finished_at is None else last_acked_before(log, copy_finished_at)
        missing_acked = (
            [] if acked_before is None else [s for s in log.ack_times if s <= acked_before and s not in set(seqs)]
        )
        result["seq"] = {
            "present": rows.present,
            "count": len(seqs),
            "max_seq": top if seqs else None,
            "missing": gaps,
            "acked_before_copy": acked_before,
            "acked_by_copy_end": acked_during,
            "acked_before_copy_missing": len(missing_acked),
        }
        if not rows.present:
            outcomes.append("seq-table-missing")
            observations.append("the seq table could not be read")
        if missing_acked:
            outcomes.append("acked-writes-missing")
            observations.append(f"{len(missing_acked)} writes acknowledged before the copy began are missing")
        if gaps:
            outcomes.append("seq-gaps")
            observations.append(f"the seq rows have gaps, first missing {gaps[:5]}")
        if seqs:
            observations.append(
                f"seq rows 1..{top}: the copy holds writes up to seq {top} "
                f"(acknowledged by copy start: {acked_before}, by copy end: {acked_during})"
            )
    if not outcomes:
        outcomes.append("consistent")
        observations.append("the copy started and held a consistent prefix of the writes")
    result["outcome"] = outcomes[0]
    result["outcomes"] = outcomes
    result["observations"] = observations
    return result


__all__ = [
    "AckLog",
    "compare_schema",
    "judge_live_copy",
    "judge_restore",
    "last_acked_before",
    "parse_ack_log",
    "seq_rows",
    "table_summary",
]
