"""Command text on a read-only host: split into catalogue commands sent one by one, and text work done here.

The kit's checks (and a runbook's troubleshooting section) write commands as shell text: `a; b`, `a && b`,
`a | tail -20`, `( a; b ) | head -c 6000`, `2>&1`, `sudo -u USER cmd`. On a host the kit did not build that text
never reaches a shell. It is split here into a small tree (sequences, pipelines, groups); every command that
must run on the host is an argv that has to match the read-only catalogue (harness/backends/ssh_catalogue.py)
and is sent on its own; every later stage of a pipe is text processing done on this machine in Python (head,
tail, grep, sort, uniq, wc: harness/backends/text_filters.py), and so are `echo`, `sleep`, `true` and `false`.
A text processor given files (`grep PATTERN FILE`) reads them with the catalogue's `cat`.

Anything else is refused before a single command is sent: expansions (`$`, backticks), globs, here-documents,
background jobs, redirections other than to /dev/null and `2>&1`, a program outside the catalogue, an option
its entry does not list. The grammar is deliberately small: what it cannot express, it does not run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.backends.ssh_catalogue import match
from harness.backends.text_filters import FILTERS, FilterError, apply, files_of, parse_options

# send(argv, user, timeout) -> (exit status, stdout, stderr, timed out)
Send = Callable[[list[str], str, float], tuple[int, str, str, bool]]

LOCAL = frozenset({"echo", "sleep", "true", "false"})
MAX_SLEEP = 30.0


class NotReadOnly(Exception):  # noqa: N818 - a refusal, not a failure of the kit
    """The text cannot run on a read-only host; `reason` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---- tokens -------------------------------------------------------------------------------------------------
@dataclass
class Simple:
    argv: list[str]
    stderr: str = "keep"  # keep | stdout | null
    stdout_null: bool = False
    user: str | None = None  # from a leading `sudo -u USER` (root for a bare `sudo`)


@dataclass
class Group:
    items: list[tuple[str, Pipeline]]  # (connector before it: "", ";", "&&", "||", pipeline)
    stderr: str = "keep"
    stdout_null: bool = False


@dataclass
class Pipeline:
    stages: list[Simple | Group] = field(default_factory=list)


_OPERATORS = ("&&", "||", ";", "|", "(", ")", "\n")


def tokenize(text: str) -> list[str | tuple[str]]:
    """Words (str) and operators/redirections (1-tuples). Expansions, globs and other syntax are refused."""
    tokens: list[str | tuple[str]] = []
    word: list[str] = []
    in_word = False
    i = 0

    def end_word() -> None:
        nonlocal in_word
        if in_word:
            tokens.append("".join(word))
            word.clear()
            in_word = False

    while i < len(text):
        c = text[i]
        if c in " \t":
            end_word()
            i += 1
        elif c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise NotReadOnly("an unterminated quote")
            word.append(text[i + 1:j])
            in_word = True
            i = j + 1
        elif c == '"':
            i += 1
            in_word = True
            while True:
                if i >= len(text):
                    raise NotReadOnly("an unterminated quote")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c in "$`":
                    raise NotReadOnly("a shell expansion ($, `) is outside the read-only grammar")
                if c == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$`\n':
                    word.append(text[i + 1])
                    i += 2
                    continue
                word.append(c)
                i += 1
        elif c == "\\":
            if i + 1 >= len(text):
                raise NotReadOnly("a trailing backslash")
            if text[i + 1] != "\n":
                word.append(text[i + 1])
                in_word = True
            i += 2
        elif c in "$`":
            raise NotReadOnly("a shell expansion ($, `) is outside the read-only grammar")
        elif c in "*?[{}":
            raise NotReadOnly(f"`{c}` (a glob or brace expansion) is outside the read-only grammar")
        elif c == "~" and not in_word:
            raise NotReadOnly("`~` (a home-directory expansion) is outside the read-only grammar")
        elif c == "#" and not in_word:
            break  # a comment: the rest of the line is not run
        elif c in "<>" or (c == "&" and text[i:i + 2] != "&&"):
            fd = "".join(word) if in_word and "".join(word).isdigit() else ""
            if fd:
                word.clear()
                in_word = False
            else:
                end_word()
            op, i = _redirect(text, i, fd)
            tokens.append((op,))
        elif text.startswith(("&&", "||"), i):
            end_word()
            tokens.append((text[i:i + 2],))
            i += 2
        elif c in ";|()\n":
            end_word()
            tokens.append((c,))
            i += 1
        else:
            word.append(c)
            in_word = True
            i += 1
    end_word()
    return tokens


_DEV_NULL = "/dev/null"


def _redirect(text: str, i: int, fd: str) -> tuple[str, int]:
    """A redirection at text[i]: only the harmless ones have a name; every other one is refused."""
    rest = text[i:]
    for spelling, name in ((">&1", "2>&1"), ("&>", "&>null"), (">>", None), (">|", None), ("<<", None),
                           (">&", None), ("<&", None), ("<", "<null"), (">", ">null"), ("&", None)):
        if rest.startswith(spelling):
            i += len(spelling)
            if name == "2>&1":
                if fd != "2":
                    break
                return "2>&1", i
            if name is None:
                break
            j = i
            while j < len(text) and text[j] in " \t":
                j += 1
            if not text.startswith(_DEV_NULL, j) or text[j + len(_DEV_NULL):j + len(_DEV_NULL) + 1] not in \
                    ("", " ", "\t", ";", "|", ")", "\n", "&"):
                raise NotReadOnly("a redirection to a file writes: only /dev/null and 2>&1 are allowed")
            j += len(_DEV_NULL)
            if name == "<null":
                return ("<null" if fd in ("", "0") else "bad"), j
            if name == "&>null":
                return "&>null", j
            return {"": ">null", "1": ">null", "2": "2>null"}.get(fd, "bad"), j
    if text[i - 1:i] == "&" and not rest.startswith(("&>", ">&")):
        raise NotReadOnly("a background job (&) is outside the read-only grammar")
    raise NotReadOnly("a redirection that writes or duplicates a descriptor is outside the read-only grammar")


# ---- tree ---------------------------------------------------------------------------------------------------
def parse(text: str) -> Group:
    tokens = tokenize(text)
    group, rest = _list(tokens, 0, depth=0)
    if rest != len(tokens):
        raise NotReadOnly(f"unexpected `{_shown(tokens[rest])}`")
    if not group.items:
        raise NotReadOnly("an empty command")
    return group


def _shown(token: str | tuple[str]) -> str:
    return token[0] if isinstance(token, tuple) else token


def _list(tokens: list[str | tuple[str]], i: int, *, depth: int) -> tuple[Group, int]:
    if depth > 8:
        raise NotReadOnly("groups nested too deeply")
    items: list[tuple[str, Pipeline]] = []
    connector = ""
    while i < len(tokens):
        token = tokens[i]
        if token in ((";",), ("\n",)):
            connector = connector or ";"
            i += 1
            continue
        if token == (")",):
            break
        if items and not connector:
            raise NotReadOnly(f"unexpected `{_shown(token)}`")
        pipeline, i = _pipeline(tokens, i, depth=depth)
        items.append((connector, pipeline))
        connector = ""
        if i < len(tokens) and tokens[i] in (("&&",), ("||",)):
            connector = tokens[i][0]
            i += 1
    if connector in ("&&", "||"):
        raise NotReadOnly(f"nothing after `{connector}`")
    return Group(items), i


def _pipeline(tokens: list[str | tuple[str]], i: int, *, depth: int) -> tuple[Pipeline, int]:
    pipeline = Pipeline()
    while True:
        if i < len(tokens) and tokens[i] == ("(",):
            group, i = _list(tokens, i + 1, depth=depth + 1)
            if i >= len(tokens) or tokens[i] != (")",):
                raise NotReadOnly("an unterminated `(`")
            i += 1
            stage: Simple | Group = group
            i = _redirects(tokens, i, group)
        else:
            stage, i = _simple(tokens, i)
        pipeline.stages.append(stage)
        if i < len(tokens) and tokens[i] == ("|",):
            i += 1
            continue
        return pipeline, i


def _redirects(tokens: list[str | tuple[str]], i: int, into: Simple | Group) -> int:
    while i < len(tokens) and isinstance(tokens[i], tuple) and tokens[i][0] in ("2>&1", "2>null", ">null", "&>null",
                                                                                  "<null", "bad"):
        _apply(tokens[i][0], into)
        i += 1
    return i


def _apply(op: str, into: Simple | Group) -> None:
    if op == "bad":
        raise NotReadOnly("a redirection that writes or duplicates a descriptor is outside the read-only grammar")
    if op == "2>&1":
        into.stderr = "stdout"
    elif op == "2>null":
        into.stderr = "null"
    elif op == ">null":
        into.stdout_null = True
    elif op == "&>null":
        into.stderr, into.stdout_null = "null", True


def _simple(tokens: list[str | tuple[str]], i: int) -> tuple[Simple, int]:
    simple = Simple([])
    while i < len(tokens):
        token = tokens[i]
        if isinstance(token, tuple):
            if token[0] in ("2>&1", "2>null", ">null", "&>null", "<null", "bad"):
                _apply(token[0], simple)
                i += 1
                continue
            break
        simple.argv.append(token)
        i += 1
    if not simple.argv:
        raise NotReadOnly(f"a missing command before `{_shown(tokens[i]) if i < len(tokens) else 'the end'}`")
    _unwrap(simple)
    return simple, i


def _unwrap(simple: Simple) -> None:
    """`sudo [-n] [-u USER] cmd` runs cmd as USER (root by default); `command -v X` is `which X`."""
    argv = simple.argv
    if argv[0] == "sudo":
        user, rest = "root", argv[1:]
        while rest and rest[0].startswith("-"):
            if rest[0] == "-n":
                rest = rest[1:]
            elif rest[0] == "-u" and len(rest) > 1:
                user, rest = rest[1], rest[2:]
            elif rest[0] == "--":
                rest = rest[1:]
                break
            else:
                raise NotReadOnly(f"`sudo {rest[0]}`: only `sudo -n` and `sudo -u USER` are in the read-only grammar")
        if not rest:
            raise NotReadOnly("`sudo` without a command")
        simple.argv, simple.user = rest, user
    if simple.argv[:2] == ["command", "-v"] and len(simple.argv) == 3:
        simple.argv = ["which", simple.argv[2]]


# ---- checking -----------------------------------------------------------------------------------------------
def remote_commands(tree: Group) -> list[Simple]:
    """Every command that would be sent to the host, in order (for checking them all before sending one)."""
    found: list[Simple] = []
    for _, pipeline in tree.items:
        for index, stage in enumerate(pipeline.stages):
            if isinstance(stage, Group):
                if index:
                    raise NotReadOnly("only text processing (head, tail, grep, sort, uniq, wc) may follow a pipe")
                found += remote_commands(stage)
                continue
            name = stage.argv[0]
            if index and name not in FILTERS:
                raise NotReadOnly(f"`{name}` after a pipe: only text processing (head, tail, grep, sort, uniq, wc) "
                                  "runs on this machine, and nothing else may follow a pipe")
            if name in FILTERS:
                try:
                    parse_options(stage.argv)  # a bad option is refused before anything is sent
                    files = files_of(stage.argv)
                except FilterError as exc:
                    raise NotReadOnly(exc.reason) from None
                if files and index:
                    raise NotReadOnly(f"`{name}` after a pipe reads its input, not files")
                found += [Simple(["cat", "--", path], stage.stderr, False, stage.user) for path in files]
                continue
            if name in LOCAL:
                continue
            found.append(stage)
    return found


def refusal(text: str) -> str | None:
    """None when `text` can run on a read-only host; else why not, in one line."""
    try:
        tree = parse(text)
        for simple in remote_commands(tree):
            found = match(simple.argv)
            if isinstance(found, str):
                return found
    except NotReadOnly as exc:
        return exc.reason
    return None


# ---- running ------------------------------------------------------------------------------------------------
@dataclass
class Output:
    status: int = 0
    out: str = ""
    err: str = ""
    timed_out: bool = False


def run(text: str, send: Send, *, user: str, timeout: float) -> Output:
    """Run `text` (already checked with `refusal`): remote commands through `send`, the rest here."""
    deadline = time.monotonic() + timeout
    return _run_group(parse(text), "", send, user, deadline)


def _remaining(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _run_group(group: Group, stdin: str, send: Send, user: str, deadline: float) -> Output:
    total = Output()
    last = 0
    for connector, pipeline in group.items:
        if (connector == "&&" and last != 0) or (connector == "||" and last == 0):
            continue
        result = _run_pipeline(pipeline, stdin, send, user, deadline)
        total.out += result.out
        total.err += result.err
        total.timed_out = total.timed_out or result.timed_out
        last = result.status
        if result.timed_out:
            break
    total.status = last
    return _redirected(total, group.stderr, group.stdout_null)


def _run_pipeline(pipeline: Pipeline, stdin: str, send: Send, user: str, deadline: float) -> Output:
    result = Output()
    err = ""
    for index, stage in enumerate(pipeline.stages):
        given = result.out if index else stdin
        if isinstance(stage, Group):
            result = _run_group(stage, given, send, user, deadline)
        else:
            result = _run_simple(stage, given, send, user, deadline)
        err += result.err
        result.err = ""
    result.err = err
    return result


def _redirected(result: Output, stderr: str, stdout_null: bool) -> Output:
    if stderr == "stdout":
        result.out, result.err = result.out + result.err, ""
    elif stderr == "null":
        result.err = ""
    if stdout_null:
        result.out = ""
    return result


def _run_simple(simple: Simple, stdin: str, send: Send, user: str, deadline: float) -> Output:
    name = simple.argv[0]
    who = simple.user or user
    if name in FILTERS:
        try:
            files = files_of(simple.argv)
        except FilterError as exc:
            return Output(2, "", f"{exc.reason}\n")
        result = Output()
        if files:
            stdin = ""
            for path in files:  # `cat` takes one file in the catalogue: one command each
                _, out, err, timed_out = send(["cat", "--", path], who, _remaining(deadline))
                stdin, result.err = stdin + out, result.err + err
                result.timed_out = result.timed_out or timed_out
        try:
            result.status, result.out = apply(simple.argv, stdin)
        except FilterError as exc:  # a bad count or pattern: the tool's own usage error
            result.status, result.err = 2, result.err + f"{exc.reason}\n"
        return _redirected(result, simple.stderr, simple.stdout_null)
    if name in LOCAL:
        return _redirected(_local(simple.argv, deadline), simple.stderr, simple.stdout_null)
    status, out, err, timed_out = send(simple.argv, who, _remaining(deadline))
    return _redirected(Output(status, out, err, timed_out), simple.stderr, simple.stdout_null)


def _local(argv: list[str], deadline: float) -> Output:
    name, args = argv[0], argv[1:]
    if name == "echo":
        newline = "\n"
        if args[:1] == ["-n"]:
            args, newline = args[1:], ""
        return Output(0, " ".join(args) + newline)
    if name == "sleep":
        try:
            seconds = float(args[0]) if len(args) == 1 else -1.0
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_SLEEP:
            return Output(1, "", f"sleep: only one number of seconds up to {MAX_SLEEP:.0f}\n")
        time.sleep(min(seconds, max(0.0, deadline - time.monotonic())))
        return Output()
    return Output(0 if name == "true" else 1)
