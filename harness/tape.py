"""Tapes: every question the suites put to the live world during a run, and its answer, so that the run can be
judged again without a lab (`stdb-conformance judge REPORT_DIR`).

A suite's check observes through a few live objects: the target (commands, files; testinfra's queries go
through its `run`), the remote vantage, the lab's services, long-lived clients (the probe agent, a
websocket subscriber) and a few local calls (sslyze, the clock that seeds hypothesis). The plugin hands the
suites those objects through `Tape.wrap`/`Tape.new`/`Tape.value`:

- recording (`STDBC_TAPE=record:FILE`, set by the run flow): each object is a `_Recording` proxy that passes
  every attribute read and call through and appends what came back (redacted, shape kept:
  harness.redact.redact_keeping_shape) to FILE, one JSON line each, under the check that asked;
- replaying (`STDBC_TAPE=replay:FILE`, set by `judge`): each object is a `_Replaying` stand-in that answers
  from FILE and touches nothing. The clock is virtual: `time.sleep` advances it, and so does every replayed
  call by the time it took when recorded, so a bounded poll makes the calls it made live.

Answers are matched per check and per call path (e.g. `testbed.target.run`) by their arguments; a call asked
again after its recorded answers are used up gets the last one again (a poll of a host in a steady state);
a question the recorded run never asked raises `NotRecorded`, and the check is an error that says so. The
generators/checkers split of the kit (scenarios record, suites judge) stays as it is: the tape records what
the suites observed, their judgement runs again.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import gzip
import importlib
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.redact import redact_keeping_shape
from harness.targets.base import CommandResult

ENV = "STDBC_TAPE"
SCHEMA = 1
SESSION = "session"


class NotRecorded(RuntimeError):
    """The replayed run asks something its recording never asked (a changed check asks a new question)."""


class _Unencodable(TypeError):
    pass


# ---------------------------------------------------------------- values on tape


def encode(value: Any, top: bool = True) -> Any:
    """`value` as JSON data with type tags; secrets redacted (shape kept). _Unencodable for a live object; one
    inside plain data (an API answer's odd leaf) is kept as its repr."""
    try:
        return _encode(value)
    except _Unencodable:
        if top:
            raise
        return {"$r": redact_keeping_shape(repr(value))}


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_keeping_shape(value)
    if isinstance(value, list):
        return [encode(v, False) for v in value]
    if isinstance(value, tuple):
        return {"$t": [encode(v, False) for v in value]}
    if isinstance(value, set | frozenset):
        return {"$set": [encode(v, False) for v in sorted(value, key=repr)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"$d": {k: encode(v, False) for k, v in value.items()}}
        raise _Unencodable(f"a dict with non-string keys: {type(value).__name__}")
    if isinstance(value, bytes | bytearray):
        try:
            return {"$bt": redact_keeping_shape(bytes(value).decode("utf-8"))}
        except UnicodeDecodeError:
            return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Path):
        return {"$p": str(value)}
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, CommandResult):
        return {"$cmd": {k: encode(v, False) for k, v in dataclasses.asdict(value).items()}}
    if isinstance(value, subprocess.CompletedProcess):
        return {"$cp": {"args": encode(value.args, False), "returncode": value.returncode,
                        "stdout": encode(value.stdout, False), "stderr": encode(value.stderr, False)}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        return {"$dc": f"{cls.__module__}:{cls.__qualname__}",
                "f": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}  # all plain, or live
    raise _Unencodable(type(value).__name__)


def decode(data: Any) -> Any:
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "$d" in data:
        return {k: decode(v) for k, v in data["$d"].items()}
    if "$t" in data:
        return tuple(decode(v) for v in data["$t"])
    if "$set" in data:
        return frozenset(decode(v) for v in data["$set"])
    if "$bt" in data:
        return data["$bt"].encode("utf-8")
    if "$b" in data:
        return base64.b64decode(data["$b"])
    if "$p" in data:
        return Path(data["$p"])
    if "$r" in data:
        return data["$r"]
    if "$dt" in data:
        return dt.datetime.fromisoformat(data["$dt"])
    if "$cmd" in data:
        return CommandResult(**{k: decode(v) for k, v in data["$cmd"].items()})
    if "$cp" in data:
        cp = data["$cp"]
        return subprocess.CompletedProcess(decode(cp["args"]), cp["returncode"], decode(cp["stdout"]),
                                           decode(cp["stderr"]))
    if "$dc" in data:
        cls = _import(data["$dc"])
        return cls(**{k: decode(v) for k, v in data["f"].items()})
    return {k: decode(v) for k, v in data.items()}


def _import(name: str) -> Any:
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _encode_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The arguments of a call as the key its answer is found by (a live argument counts by its type)."""
    def one(v: Any) -> Any:
        try:
            return encode(v)
        except _Unencodable:
            return {"$live": type(v).__name__}
    return json.dumps([[one(a) for a in args], {k: one(v) for k, v in sorted(kwargs.items())}], sort_keys=True)


_DIGITS = re.compile(r"\d+")


def _loose(key: str) -> str:
    """A key with every number made 0: a timestamp or a counter in a command still finds its answer."""
    return _DIGITS.sub("0", key)


def _encode_exception(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    args = []
    for a in exc.args:
        try:
            args.append(encode(a))
        except _Unencodable:
            args.append(str(a))
    return {"$exc": f"{cls.__module__}:{cls.__qualname__}", "args": args, "text": redact_keeping_shape(str(exc))}


def _decode_exception(data: dict[str, Any]) -> BaseException:
    args = [decode(a) for a in data["args"]]
    try:
        cls = _import(data["$exc"])
    except Exception:  # noqa: BLE001 - a class that is gone is raised as what it said
        return RuntimeError(f"{data['$exc'].rpartition(':')[2]}: {data.get('text', '')}")
    try:
        exc = cls(*args)
    except Exception:  # noqa: BLE001 - a constructor that wants other arguments (botocore's ClientError)
        exc = cls.__new__(cls)
        exc.args = tuple(args)
    return exc


# ---------------------------------------------------------------- the tape


class Tape:
    """One suite process's tape: off, recording to a file, or replaying one."""

    def __init__(self, mode: str = "off", path: Path | None = None) -> None:
        self.mode = mode
        self.path = path
        self.scope = SESSION
        self._out: IO[str] | None = None
        self._queues: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self._used: dict[int, bool] = {}
        self.offset = 0.0  # replay: seconds the virtual clock is ahead of the real one
        self.started_wall = time.time()
        if mode == "record" and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = gzip.open(path, "at", encoding="utf-8") if path.suffix == ".gz" else path.open("a")
            self._write({"tape": SCHEMA, "wall": self.started_wall})
        elif mode == "replay" and path is not None:
            self._load(path)

    @classmethod
    def from_env(cls) -> Tape:
        spec = os.environ.get(ENV, "")
        mode, _, path = spec.partition(":")
        if mode in ("record", "replay") and path:
            return cls(mode, Path(path))
        return cls()

    # -- recording

    def _write(self, entry: dict[str, Any]) -> None:
        assert self._out is not None
        self._out.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._out.flush()

    def _record(self, path: str, kind: str, key: str, seconds: float, **answer: Any) -> None:
        self._write({"s": self.scope, "p": path, "k": kind, "a": key, "sec": round(seconds, 4), **answer})

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    # -- replaying

    def _load(self, path: Path) -> None:
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as fh:
                lines = [json.loads(line) for line in fh if line.strip()]
        except (OSError, ValueError) as exc:
            raise NotRecorded(f"the tape {path} cannot be read: {exc}") from None
        if not lines or lines[0].get("tape") != SCHEMA:
            raise NotRecorded(f"{path} is not a tape of schema {SCHEMA}")
        self.started_wall = float(lines[0].get("wall") or time.time())
        for entry in lines[1:]:
            self._queues[(entry["s"], entry["p"])].append(entry)

    def _answer(self, path: str, key: str) -> dict[str, Any]:
        if os.environ.get("STDBC_TAPE_DEBUG"):
            print(f"tape: {self.scope} {path} {key}", file=sys.stderr)
        queue = self._queues.get((self.scope, path), [])
        found = _first(queue, self._used, lambda e: e["a"] == key)
        if found is None:
            loose = _loose(key)
            found = _first(queue, self._used, lambda e: _loose(e["a"]) == loose)
        if found is None:
            again = [e for e in queue if e["a"] == key and self._used.get(id(e))]
            if not again:
                raise NotRecorded(f"the recorded run never asked {path}{_shown(key)} in {self.scope}")
            found = again[-1]
        self._used[id(found)] = True
        self.offset += float(found.get("sec") or 0.0)
        return found

    # -- what the plugin and the suites call

    def wrap(self, obj: Any, path: str) -> Any:
        """`obj` as the suites should see it: itself (off), a recording proxy, or (replay) a stand-in; in
        replay `obj` may be None (it is never touched)."""
        if self.mode == "record":
            return _Recording(self, obj, path)
        if self.mode == "replay":
            return _Replaying(self, path)
        return obj

    def new(self, path: str, factory: Callable[[], Any]) -> Any:
        """An object made by `factory` (a local process, a client session): in replay it is never made."""
        if self.mode == "replay":
            return _Replaying(self, path)
        return self.wrap(factory(), path)

    def value(self, path: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` (a local call whose answer the judgement depends on), taped."""
        if self.mode == "off":
            return fn(*args, **kwargs)
        return _call(self, path, fn, args, kwargs)


def _first(queue: list[dict[str, Any]], used: dict[int, bool], match: Callable[[dict[str, Any]], bool]
           ) -> dict[str, Any] | None:
    return next((e for e in queue if not used.get(id(e)) and match(e)), None)


def _shown(key: str) -> str:
    text = key if len(key) <= 300 else key[:300] + "..."
    return f" {text}" if key and key != "[[], {}]" else ""


# what releases a live object: asked in the teardown of whichever check ran last, so a replay of other checks
# may ask it where it never was; unanswered, it does nothing (there is nothing to release)
_RELEASES = ("__exit__", "close", "kill", "terminate")


def _call(tape: Tape, path: str, fn: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    key = _encode_args(args, kwargs)
    if tape.mode == "replay":
        try:
            entry = tape._answer(path, key)
        except NotRecorded:
            if path.rpartition(".")[2] in _RELEASES:
                return None
            raise
        if "raised" in entry:
            raise _decode_exception(entry["raised"])
        if "object" in entry:
            return _Replaying(tape, entry["object"])
        return decode(entry["value"])
    assert fn is not None
    started = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        tape._record(path, "call", key, time.monotonic() - started, raised=_encode_exception(exc))
        raise
    seconds = time.monotonic() - started
    try:
        tape._record(path, "call", key, seconds, value=encode(result))
        return result
    except _Unencodable:
        child = f"{path}({_short(key)})"
        tape._record(path, "call", key, seconds, object=child)
        return _Recording(tape, result, child)


def _short(key: str) -> str:
    return key if len(key) <= 120 else key[:120] + "..."


class _Recording:
    """A live object whose every attribute read and call is appended to the tape."""

    def __init__(self, tape: Tape, obj: Any, path: str) -> None:
        object.__setattr__(self, "_tape", tape)
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        tape, obj, path = self._tape, self._obj, f"{self._path}.{name}"
        started = time.monotonic()
        try:
            value = getattr(obj, name)
        except AttributeError as exc:
            tape._record(path, "attr", "", time.monotonic() - started, raised=_encode_exception(exc))
            raise
        if callable(value) and not isinstance(value, type):
            return lambda *args, **kwargs: _call(tape, path, value, args, kwargs)
        try:
            tape._record(path, "attr", "", time.monotonic() - started, value=encode(value))
            return value
        except _Unencodable:
            tape._record(path, "attr", "", time.monotonic() - started, object=path)
            return _Recording(tape, value, path)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._obj, name, value)

    def __enter__(self) -> Any:
        _call(self._tape, f"{self._path}.__enter__", self._obj.__enter__, (), {})
        return self

    def __exit__(self, *exc: Any) -> Any:
        return _call(self._tape, f"{self._path}.__exit__", lambda: self._obj.__exit__(*exc), (), {})

    def __iter__(self) -> Any:
        return iter(_call(self._tape, f"{self._path}.__iter__", lambda: list(self._obj), (), {}))


class _Replaying:
    """What answers in place of a live object when a run is judged again: only the tape."""

    def __init__(self, tape: Tape, path: str) -> None:
        object.__setattr__(self, "_tape", tape)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_set", {})

    def __getattr__(self, name: str) -> Any:
        if name in self._set:
            return self._set[name]
        tape, path = self._tape, f"{self._path}.{name}"
        if tape._queues.get((tape.scope, path)) and tape._queues[(tape.scope, path)][0]["k"] == "attr":
            entry = tape._answer(path, "")
            if "raised" in entry:
                raise _decode_exception(entry["raised"])
            if "object" in entry:
                return _Replaying(tape, entry["object"])
            return decode(entry["value"])
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: _call(tape, path, None, args, kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        self._set[name] = value

    def __enter__(self) -> Any:
        _call(self._tape, f"{self._path}.__enter__", None, (), {})
        return self

    def __exit__(self, *exc: Any) -> Any:
        return _call(self._tape, f"{self._path}.__exit__", None, (), {})

    def __iter__(self) -> Any:
        return iter(_call(self._tape, f"{self._path}.__iter__", None, (), {}))


# ---------------------------------------------------------------- the virtual clock of a replay

_REAL_MONOTONIC: Callable[[], float] = time.monotonic


def install_clock(tape: Tape) -> None:
    """Replay only: `time.sleep` advances a virtual clock instead of waiting, and `time.monotonic`/`time.time`
    read it (the wall clock starting where the recording's did), so bounded polls end where they ended."""
    real_start = _REAL_MONOTONIC()

    def monotonic() -> float:
        return _REAL_MONOTONIC() + tape.offset

    def wall() -> float:
        return tape.started_wall + (_REAL_MONOTONIC() - real_start) + tape.offset

    def sleep(seconds: Any) -> None:
        tape.offset += max(0.0, float(seconds))

    time.monotonic = monotonic
    time.time = wall
    time.sleep = sleep


_CURRENT: Tape | None = None


def current() -> Tape:
    """The tape of this suite process (from STDBC_TAPE; off when unset)."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = Tape.from_env()
        if _CURRENT.mode == "replay":
            install_clock(_CURRENT)
    return _CURRENT
