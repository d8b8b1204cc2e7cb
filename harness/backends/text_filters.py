"""Text processing for command text on a read-only host, done on the kit's machine in Python, not on the host:
`head`, `tail`, `grep`, `sort`, `uniq`, `wc` with the options the kit and runbooks use (harness/backends/
readonly_script.py sends the commands that read the host and hands their output here). An option it does not know
is refused (FilterError), never guessed.
"""

from __future__ import annotations

import re

FILTERS = frozenset({"head", "tail", "grep", "egrep", "sort", "uniq", "wc"})


class FilterError(Exception):
    """A text processor or option this module does not implement; `reason` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_VALUED = {"head": {"-n", "-c"}, "tail": {"-n", "-c"}, "grep": {"-A", "-B", "-C", "-e", "-m"}, "egrep": {"-A", "-B",
           "-C", "-e", "-m"}, "sort": {"-k", "-t"}, "uniq": set(), "wc": set()}
_FLAGS = {"head": set(), "tail": set(), "grep": set("EFivncqxwoh") | {"-E", "-F"}, "sort": set("unrz"),
          "uniq": set("cd"), "wc": set("lcw")}


def parse_options(argv: list[str]) -> tuple[dict[str, str], set[str], list[str]]:
    """(valued options, single-letter flags, operands) of a text processor; an unknown option is refused."""
    name = argv[0]
    base = "grep" if name == "egrep" else name
    valued: dict[str, str] = {}
    flags: set[str] = {"E"} if name == "egrep" else set()
    operands: list[str] = []
    args = argv[1:]
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            operands += args[i + 1:]
            break
        if re.fullmatch(r"-[0-9]+", word) and base in ("head", "tail"):
            valued["-n"] = word[1:]
        elif word[:2] in _VALUED[base] and len(word) > 2 and word[2:].isdigit():
            valued[word[:2]] = word[2:]  # -A1, -n20
        elif word in _VALUED[base]:
            if i + 1 >= len(args):
                raise FilterError(f"`{name} {word}` needs a value")
            valued[word] = args[i + 1]
            i += 1
        elif word.startswith("-") and len(word) > 1 and all(ch in _FLAGS[base] for ch in word[1:]):
            flags |= set(word[1:])
        elif word.startswith("-") and len(word) > 1:
            raise FilterError(f"`{name} {word}` is not an option the kit's {base} understands")
        else:
            operands.append(word)
        i += 1
    return valued, flags, operands


def files_of(argv: list[str]) -> list[str]:
    valued, _, operands = parse_options(argv)
    if argv[0] in ("grep", "egrep") and "-e" not in valued:
        operands = operands[1:]
    return operands


def _count(value: str, name: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise FilterError(f"`{name}` needs a number, not `{value}`")
    return int(value)


def apply(argv: list[str], text: str) -> tuple[int, str]:
    name = argv[0]
    valued, flags, operands = parse_options(argv)
    lines = text.splitlines(keepends=True)
    if name == "head":
        if "-c" in valued:
            return 0, text[:max(0, _count(valued["-c"], name))]
        n = _count(valued.get("-n", "10"), name)
        return 0, "".join(lines[:n] if n >= 0 else lines[:n])
    if name == "tail":
        if "-c" in valued:
            n = _count(valued["-c"], name)
            return 0, text[-n:] if n else ""
        spec = valued.get("-n", "10")
        n = _count(spec, name)
        if spec.startswith("+"):
            return 0, "".join(lines[max(0, n - 1):])
        return 0, "".join(lines[-n:]) if n else ""
    if name in ("grep", "egrep"):
        return _grep(valued, flags, operands, lines)
    if name == "sort":
        keyed = sorted(lines, key=(lambda s: _number(s)) if "n" in flags else None, reverse="r" in flags)
        if "u" in flags:
            keyed = list(dict.fromkeys(keyed))
        return 0, "".join(keyed)
    if name == "uniq":
        kept: list[str] = []
        for line in lines:
            if not kept or kept[-1] != line:
                kept.append(line)
        return 0, "".join(kept)
    # wc
    counts = {"l": text.count("\n"), "w": len(text.split()), "c": len(text.encode())}
    shown = [str(counts[k]) for k in "lwc" if k in flags] or [str(counts[k]) for k in "lwc"]
    return 0, " ".join(shown) + "\n"


def _number(line: str) -> float:
    found = re.match(r"\s*(-?[0-9]+(?:\.[0-9]+)?)", line)
    return float(found.group(1)) if found else 0.0


def _grep(valued: dict[str, str], flags: set[str], operands: list[str], lines: list[str]) -> tuple[int, str]:
    if "-e" in valued:
        pattern = valued["-e"]
    elif operands:
        pattern = operands[0]
    else:
        raise FilterError("`grep` without a pattern")
    if "F" in flags:
        regex = re.escape(pattern)
    elif "E" in flags:
        regex = pattern
    else:
        regex = _basic_to_extended(pattern)
    if "w" in flags:
        regex = rf"\b(?:{regex})\b"
    if "x" in flags:
        regex = rf"^(?:{regex})$"
    try:
        compiled = re.compile(regex, re.IGNORECASE if "i" in flags else 0)
    except re.error as exc:
        raise FilterError(f"grep: the pattern {pattern!r} is not one the kit's grep reads ({exc})") from None
    after = _count(valued.get("-A", valued.get("-C", "0")), "grep")
    before = _count(valued.get("-B", valued.get("-C", "0")), "grep")
    limit = _count(valued["-m"], "grep") if "-m" in valued else -1
    hits = [i for i, line in enumerate(lines) if bool(compiled.search(line.rstrip("\n"))) != ("v" in flags)]
    if limit >= 0:
        hits = hits[:limit]
    status = 0 if hits else 1
    if "q" in flags:
        return status, ""
    if "c" in flags:
        return status, f"{len(hits)}\n"
    shown: list[str] = []
    printed = -1
    hit_set = set(hits)
    for hit in hits:
        start, end = max(0, hit - before), min(len(lines), hit + after + 1)
        if printed >= 0 and start > printed + 1 and (before or after):
            shown.append("--\n")
        for i in range(max(start, printed + 1), end):
            line = lines[i] if lines[i].endswith("\n") else lines[i] + "\n"
            prefix = (f"{i + 1}{':' if i in hit_set else '-'}") if "n" in flags else ""
            shown.append(prefix + line)
            printed = i
    return status, "".join(shown)


def _basic_to_extended(pattern: str) -> str:
    """A POSIX basic regular expression as Python's: \\( \\) \\| \\{ \\} \\+ \\? are operators, the bare ones text."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(nxt if nxt in "(){}|+?" else "\\" + nxt)
            i += 2
            continue
        out.append("\\" + c if c in "(){}|+?" else c)
        i += 1
    return "".join(out)
