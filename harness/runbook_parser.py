"""Runbook Markdown -> ordered, typed raw steps, each tied to its heading path and 1-based source lines.

Two passes:
  1. `_scan` turns the lines into block elements: headings (setext `===`/`---` and atx `#`), prose
     paragraphs, lists (items with the code blocks attached to them) and code blocks (4-space indented
     and ``` / ~~~ fenced, with or without an info string, also inside list items).
  2. `_Extractor` walks the elements section by section and emits `RawStep`s:
     - shell: one step per command (backslash continuations, here-documents and quoted strings that span
       lines are joined); `# comment` lines become notes of the next command (trailing ones go to the last);
     - file_write / line_edit: an editor command (`sudo nano PATH`, vi, vim, sudo -e, ...) plus the
       content block the following prose introduces ("Add the following content:" -> file_write,
       "Add a line ..." -> line_edit). The editor line itself is not a shell step;
     - console: a list introduced by "In the AWS Console:" becomes one step with provider parameters;
       items of a procedure list ("High-level restore flow:", "At least monthly:", any numbered list)
       become one console step each, unless the item carries code blocks (those become shell steps);
     - not_run: sample output, `$ ` transcripts, blocks that are not commands, comment-only blocks.

Phases, locations, placeholders and ordering are the planner's job (harness/planner.py).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import RunbookError, UsageError
from harness.model import StepKind

RUNBOOK_HINT = "pass --runbook or set STDB_RUNBOOK"


# ----------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Heading:
    level: int
    title: str  # without the `[](#anchor "Direct link to ...")` tail
    line: int
    path: tuple[str, ...]  # titles from the top-level heading down to this one


@dataclass(frozen=True)
class Prose:
    """A prose paragraph or list item: the planner reads location hints ("On your local machine") here."""

    section: tuple[str, ...]
    line_start: int
    line_end: int
    text: str


@dataclass
class RawStep:
    """A step as the runbook gives it, before profile, phase, location and placeholder substitution."""

    kind: StepKind
    section: tuple[str, ...]
    line_start: int
    line_end: int
    raw: str  # exactly as written (relative to the block's indentation)
    body: str = ""  # SHELL: the command; FILE_WRITE/LINE_EDIT: the content (before substitution)
    body_line: int = 0  # source line of the first line of `body` (its lines follow one per source line)
    path: str = ""
    editor_command: str = ""
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # NOT_RUN: why
    intro: str = ""  # the prose that introduced the block or list ("Add the following content:")
    intro_line: int = 0


@dataclass
class ParsedRunbook:
    path: Path
    text: str
    sha256: str
    headings: list[Heading]
    steps: list[RawStep]
    prose: list[Prose]

    def sections(self) -> list[tuple[str, ...]]:
        """Heading paths in document order."""
        return [h.path for h in self.headings]


# --------------------------------------------------------------------------------- block scanner

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_ATX = re.compile(r"^ {0,3}(?P<hashes>#{1,6})(?:[ \t]+(?P<title>.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?P<under>=+|-+)[ \t]*$")
_HR = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_ITEM = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>[-*+]|\d{1,9}[.)])(?P<space>[ \t]+|$)(?P<text>.*)$")
_ANCHOR_TAIL = re.compile(r"\s*\[\]\(#[^\s)]*(?:\s+\"[^\"]*\")?\)\s*$")


@dataclass
class _Heading:
    level: int
    title: str
    line: int


@dataclass
class _Para:
    lines: list[tuple[int, str]]

    @property
    def text(self) -> str:
        return " ".join(t.strip() for _, t in self.lines)


@dataclass
class _Code:
    start: int  # first source line (opening fence, or first indented line)
    end: int  # last source line (closing fence, or last indented line)
    body_line: int  # source line of the first content line
    lines: list[str]  # content lines, dedented by the block's indentation
    fenced: bool
    info: str


@dataclass
class _Item:
    line: int
    indent: int
    content_indent: int
    marker: str
    lines: list[tuple[int, str]]  # first line text after the marker, then continuation / nested lines
    codes: list[_Code] = field(default_factory=list)
    source: list[tuple[int, str]] = field(default_factory=list)  # source lines as written

    @property
    def text(self) -> str:
        return " ".join(t.strip() for _, t in self.lines if t.strip())

    @property
    def first_text(self) -> str:
        return self.lines[0][1].strip()

    @property
    def last_line(self) -> int:
        return max(ln for ln, _ in self.source)


@dataclass
class _List:
    items: list[_Item]

    @property
    def ordered(self) -> bool:
        return bool(self.items) and self.items[0].marker[0].isdigit()


_Element = _Heading | _Para | _Code | _List


def _width(line: str) -> int:
    """Indentation width of a line (tabs count to the next multiple of 4)."""
    width = 0
    for char in line:
        if char == " ":
            width += 1
        elif char == "\t":
            width += 4 - width % 4
        else:
            break
    return width


def _strip_indent(line: str, columns: int) -> str:
    """Remove up to `columns` columns of leading whitespace; whitespace-only lines shorter than that -> ''."""
    width = 0
    index = 0
    while index < len(line) and width < columns and line[index] in " \t":
        width += 1 if line[index] == " " else 4 - width % 4
        index += 1
    return line[index:]


def _is_blank(line: str) -> bool:
    return not line.strip()


def _fence_match(line: str) -> re.Match[str] | None:
    match = _FENCE.match(line)
    if match and match.group("fence")[0] == "`" and "`" in match.group("info"):
        return None
    return match


def _clean_title(title: str) -> str:
    return _ANCHOR_TAIL.sub("", title).strip()


class _Scanner:
    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.elements: list[_Element] = []
        self.para: _Para | None = None
        self.list: _List | None = None
        self.prev = "start"  # start | blank | para | item | code | heading | hr

    def scan(self) -> list[_Element]:
        i = 0
        while i < len(self.lines):
            i = self._step(i)
        return self.elements

    # -- one line (or one block) at a time; returns the next index
    def _step(self, i: int) -> int:
        line = self.lines[i]
        if _is_blank(line):
            self.para = None
            self.prev = "blank"
            return i + 1
        if self.list is not None:
            handled = self._in_list(i)
            if handled is not None:
                return handled
        return self._top_level(i)

    def _top_level(self, i: int) -> int:
        line = self.lines[i]
        width = _width(line)
        if width >= 4 and self.prev in ("start", "blank", "heading", "code", "hr"):
            return self._indented_code(i, 4, None)
        fence = _fence_match(line)
        if fence:
            return self._fenced_code(i, fence, None)
        atx = _ATX.match(line)
        if atx:
            self._heading(len(atx.group("hashes")), atx.group("title") or "", i + 1)
            return i + 1
        setext = _SETEXT.match(line)
        if setext and self.para is not None and self.prev == "para":
            self._setext(setext.group("under")[0], i + 1)
            return i + 1
        if _HR.match(line):
            self.para = None
            self.prev = "hr"
            return i + 1
        item = _ITEM.match(line)
        if item:
            self._new_list(i, item)
            return i + 1
        self._para_line(i)
        return i + 1

    def _heading(self, level: int, title: str, line: int) -> None:
        self.para = None
        self.list = None
        self.elements.append(_Heading(level, _clean_title(title), line))
        self.prev = "heading"

    def _setext(self, char: str, line: int) -> None:
        assert self.para is not None
        para = self.para
        self.elements.remove(para)
        title = para.text
        self.para = None
        self.list = None
        self.elements.append(_Heading(1 if char == "=" else 2, _clean_title(title), para.lines[0][0]))
        self.prev = "heading"

    def _para_line(self, i: int) -> None:
        if self.para is None or self.prev != "para":
            self.para = _Para([])
            self.elements.append(self.para)
        self.para.lines.append((i + 1, self.lines[i]))
        self.prev = "para"

    # -- lists
    def _new_list(self, i: int, match: re.Match[str]) -> None:
        self.para = None
        self.list = _List([])
        self.elements.append(self.list)
        self._add_item(i, match)

    def _add_item(self, i: int, match: re.Match[str]) -> None:
        assert self.list is not None
        indent = _width(match.group("indent"))
        marker = match.group("marker")
        space = len(match.group("space").expandtabs(4)) or 1
        content = indent + len(marker) + (space if space <= 4 else 1)
        text = match.group("text")
        item = _Item(i + 1, indent, content, marker, [(i + 1, text)], source=[(i + 1, self.lines[i])])
        self.list.items.append(item)
        self.prev = "item"

    def _in_list(self, i: int) -> int | None:
        """Handle line i as part of the open list; None when the line closes the list."""
        assert self.list is not None
        item = self.list.items[-1]
        line = self.lines[i]
        width = _width(line)
        if _ATX.match(line) or (_HR.match(line) and width < item.content_indent):
            self.list = None
            return None
        match = _ITEM.match(line)
        if match and width < item.content_indent:
            self._add_item(i, match)
            return i + 1
        if width >= item.content_indent or self.prev == "item":
            return self._item_line(i, item)
        fence = _fence_match(line)
        if fence and item.text.endswith(":") and self.prev in ("item", "blank", "code"):
            return self._fenced_code(i, fence, item)  # "4) Ensure ownership:" then a fence at column 0
        self.list = None
        return None

    def _item_line(self, i: int, item: _Item) -> int:
        line = self.lines[i]
        width = _width(line)
        if width >= item.content_indent + 4 and self.prev in ("blank", "code"):
            return self._indented_code(i, item.content_indent + 4, item)
        fence = _fence_match(line)
        if fence:
            return self._fenced_code(i, fence, item)
        item.lines.append((i + 1, _strip_indent(line, item.content_indent)))
        item.source.append((i + 1, line))
        self.prev = "item"
        return i + 1

    # -- code blocks
    def _fenced_code(self, i: int, match: re.Match[str], item: _Item | None) -> int:
        indent = _width(match.group("indent"))
        fence = match.group("fence")
        closing = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        j = i + 1
        while j < len(self.lines) and not closing.match(self.lines[j]):
            j += 1
        if j >= len(self.lines):
            raise RunbookError(self.path, i + 1, f"unclosed code fence {fence!r}",
                               hint="close the block with a matching fence line")
        body = [_strip_indent(text, indent) for text in self.lines[i + 1:j]]
        code = _Code(i + 1, j + 1, i + 2, body, True, match.group("info").strip())
        self._add_code(code, item)
        return j + 1

    def _indented_code(self, i: int, indent: int, item: _Item | None) -> int:
        j = i
        last = i
        while j < len(self.lines) and (_is_blank(self.lines[j]) or _width(self.lines[j]) >= indent):
            if not _is_blank(self.lines[j]):
                last = j
            j += 1
        source = self.lines[i:last + 1]
        body = [_strip_indent(text, indent) for text in source]
        self._add_code(_Code(i + 1, last + 1, i + 1, body, False, ""), item)
        return last + 1

    def _add_code(self, code: _Code, item: _Item | None) -> None:
        self.para = None
        if item is not None:
            item.codes.append(code)
        else:
            self.list = None
            self.elements.append(code)
        self.prev = "code"


# --------------------------------------------------------------------------------- classification

_EDITOR = re.compile(
    r"^(?:sudo\s+(?:(?:-u\s*\S+|--user[= ]\S+|-[A-Za-z]+)\s+)*)?"
    r"(?:nano|vi|vim|nvim|emacs|micro|pico|editor|sensible-editor|sudoedit)\s+"
    r"(?:[-+]\S*\s+)*(?P<path>\S+)\s*$"
)
_SUDO_E = re.compile(r"^sudo\s+(?:(?:-u\s*\S+|--user[= ]\S+|-[A-Za-z]*)\s+)*-e\s+(?P<path>\S+)\s*$")
_SAMPLE_INTRO = re.compile(
    r"you should see|you(?:'ll| will) see|(?:sample|example|expected|typical) output|"
    r"output (?:looks|should look|will look|is similar)|(?:should|will) (?:print|output|display|look like)|"
    r"\boutput:\s*$",
    re.IGNORECASE,
)
_OUTPUT_INFO = {"text", "txt", "output", "log", "plaintext", "plain"}
_CONFIG_INFO = {"ini", "toml", "yaml", "yml", "json", "nginx", "conf", "systemd", "xml", "html", "hcl", "cfg"}
_CONTENT_INTRO = re.compile(
    r"\b(?:add|append|insert|paste|put|write|contents?|following|configuration|config|lines?)\b",
    re.IGNORECASE)
_LINE_INTRO = re.compile(r"\b(?:add|append|insert)\b[^.:]*?\blines?\b", re.IGNORECASE)
CONSOLE_INTRO = re.compile(
    r"\b(?:in|on|from|using|open|via)\s+(?:the\s+)?(?:aws|gcp|google cloud|azure|digitalocean|hetzner|linode|"
    r"oracle cloud|oci|cloud|web)\s+(?:management\s+)?console\b",
    re.IGNORECASE)
_PROCEDURE_INTRO = re.compile(
    r"\b(?:flow|procedure|steps|at least (?:hourly|daily|weekly|monthly|quarterly|yearly|once)|regularly|"
    r"periodically|do the following)\b",
    re.IGNORECASE)
_PERMS_OUTPUT = re.compile(r"^[dlcbps-][rwxsStT-]{9}")
_COMMAND_WORD = re.compile(r"^[a-z_.~/$(!\\\"']\S*$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_HEREDOC = re.compile(r"(?<!<)<<-?(?!<)\s*(['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)\1")


def _editor_path(command: str) -> str | None:
    """The file an editor command opens (`sudo nano /etc/fstab` -> /etc/fstab), else None."""
    text = command.strip()
    if "\n" in text or any(op in text for op in ("|", "&&", ";", ">", "<")):
        return None
    match = _SUDO_E.match(text) or _EDITOR.match(text)
    if not match:
        return None
    try:
        return shlex.split(match.group("path"))[0]
    except (ValueError, IndexError):
        return match.group("path")


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def looks_like_command(line: str) -> bool:
    """A rough test that a line is a shell command, not output or configuration."""
    text = line.strip()
    if not text or text[0] in "●○✓✔✗×│├└─┌[{}<>|*=+:" or text.startswith("$ "):
        return False
    if _PERMS_OUTPUT.match(text):
        return False
    first = text.split()[0]
    if _ASSIGNMENT.match(first):
        rest = text[len(first):].strip()
        return not rest or looks_like_command(rest)
    return bool(_COMMAND_WORD.match(first)) and not first.endswith(":")


def _looks_like_config(lines: list[str]) -> bool:
    body = [t for t in lines if t.strip() and not _is_comment(t)]
    if not body:
        return False
    if re.match(r"^\s*\[[^\]]+\]\s*$", body[0]):
        return True
    opens = any(re.search(r"\s\{\s*$", t) and "()" not in t for t in body)
    closes = any(re.match(r"^\s*\}\s*;?\s*$", t) for t in body)
    return opens and closes


def _not_run_reason(code: _Code, intro: str) -> str:
    """Why a block (not introduced by an editor step) does not run, or '' when it is shell commands."""
    body = [t for t in code.lines if t.strip()]
    info = code.info.split()[0].lower() if code.info else ""
    sample = _SAMPLE_INTRO.search(intro)
    if sample:
        return f'sample output (introduced by "{sample.group(0).strip()}")'
    if info in _OUTPUT_INFO:
        return f"sample output (info string `{info}`)"
    if not body:
        return "empty block"
    if all(_is_comment(t) for t in body):
        return "comment lines only (commented-out configuration)"
    if any(t.lstrip().startswith("$ ") for t in body):
        return "shell transcript (`$ ` prompts and their output)"
    if any(t.lstrip().startswith("●") for t in body):
        return "sample output (`●` status lines)"
    if info in _CONFIG_INFO or _looks_like_config(body):
        return "configuration snippet with no editor step naming its file"
    first = next(t for t in body if not _is_comment(t))
    if not looks_like_command(first):
        return f"does not look like shell commands (first line: {first.strip()[:60]!r})"
    return ""


# ------------------------------------------------------------------------------- command splitting


@dataclass
class _Chunk:
    offset: int  # index of the first line in the block body
    lines: list[str]
    notes: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _continues(text: str) -> bool:
    stripped = text.rstrip("\n")
    trailing = len(stripped) - len(stripped.rstrip("\\"))
    return trailing % 2 == 1


def _open_heredoc(text: str) -> bool:
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if _is_comment(line):
            continue
        for match in _HEREDOC.finditer(line):
            word = match.group("word")
            rest = lines[index + 1:]
            if not any(r.strip() == word for r in rest):
                return True
    return False


def _unbalanced(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def _needs_more(text: str, quotes: bool) -> bool:
    return _continues(text) or _open_heredoc(text) or (quotes and _unbalanced(text))


def _command_end(lines: list[str], start: int) -> int:
    """Index of the last line of the command starting at `start`."""
    for quotes in (True, False):
        end = start
        text = lines[start]
        while end + 1 < len(lines) and _needs_more(text, quotes):
            end += 1
            text += "\n" + lines[end]
        if not (quotes and _unbalanced(text)):
            return end
    return end


def split_commands(lines: list[str]) -> tuple[list[_Chunk], list[str]]:
    """Commands of a shell block (with the comments before each as notes) and the trailing comments."""
    chunks: list[_Chunk] = []
    notes: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if _is_blank(line):
            index += 1
            continue
        if _is_comment(line):
            notes.append(line.strip())
            index += 1
            continue
        end = _command_end(lines, index)
        chunks.append(_Chunk(index, lines[index:end + 1], notes))
        notes = []
        index = end + 1
    return chunks, notes


# ------------------------------------------------------------------------------------ console params

_EMPHASIS = re.compile(r"\*\*|__|`")


def _plain(text: str) -> str:
    return _EMPHASIS.sub("", text)


_VOLUME_TYPE = re.compile(r"\b(gp2|gp3|io1|io2|st1|sc1)\b", re.IGNORECASE)
_SIZE = re.compile(r"\b(\d+(?:\.\d+)?)\s*(GB|GiB|TB|TiB|G)\b")
_SAME_AZ = re.compile(r"\bsame\s+(?:AZ|availability\s+zone)\b", re.IGNORECASE)
_CREATE_VOLUME = re.compile(r"\bcreate\b[^.\n]*\bvolume\b", re.IGNORECASE)
_FROM_SNAPSHOT = re.compile(r"\bvolume\b[^.\n]*\bfrom\s+(?:a|the|an)?\s*(?:\w+\s+)?snapshot\b", re.IGNORECASE)
_ATTACH = re.compile(r"\battach\b(?:\s+(?:it|the\s+volume))?(?:\s+to\s+(?:a|an|the)\s+(?P<role>\w+))?",
                     re.IGNORECASE)
_MOUNT = re.compile(r"\bmount\b(?:\s+it)?\s+(?:at|on)\s+(?P<point>/\S*)", re.IGNORECASE)
_START = re.compile(r"^start\s+(?:the\s+)?(?P<what>[\w.-]+)", re.IGNORECASE)
_QUERY = re.compile(r"`(?P<cmd>[^`]+)`")
_QUERY_WORDS = re.compile(r"\b(?:verif\w*|query|queries)\b", re.IGNORECASE)
_RULE = re.compile(
    r"\b(?P<freq>hourly|daily|weekly|monthly|quarterly|yearly|annual)\s+backups?\b[^\n]*?\bretain(?:ed|s)?\s+"
    r"(?:for\s+)?(?P<a>\d+)\s*(?:(?:–|—|-|to)\s*(?P<b>\d+)\s*)?(?P<unit>hours?|days?|weeks?|months?|years?)\b",
    re.IGNORECASE)
_TAG = re.compile(r"`?(?P<key>[A-Za-z][\w:.-]*)=(?P<value>[\w.:/-]+)`?")
_VAULT = re.compile(r"\bvault\s+(?:named\s+|called\s+)?[`*\"']+(?P<name>[A-Za-z0-9_.-]{2,50})[`*\"']+|"
                    r"[`*\"']+(?P<name2>[A-Za-z0-9_.-]{2,50})[`*\"']+\s+(?:backup\s+)?vault\b", re.IGNORECASE)
_CREATE_VAULT = re.compile(r"\bcreate\b[^.\n]*\bvault\b", re.IGNORECASE)
_COPY = re.compile(r"\bcopy\b[^\n]*\b(?:region|account)s?\b", re.IGNORECASE)


def _size_gb(text: str) -> int | None:
    match = _SIZE.search(text)
    if not match:
        return None
    number = float(match.group(1))
    factor = {"TB": 1000, "TiB": 1024}.get(match.group(2), 1)
    return int(number * factor)


def _volume_params(text: str, attach: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"action": "create_and_attach_volume" if attach else "create_volume"}
    volume_type = _VOLUME_TYPE.search(text)
    if volume_type:
        params["volume_type"] = volume_type.group(1).lower()
    size = _size_gb(text)
    if size is not None:
        params["size_gb"] = size
    params["same_az"] = bool(_SAME_AZ.search(text))
    return params


def _retention(match: re.Match[str]) -> dict[str, int]:
    unit = match.group("unit").lower().rstrip("s") + "s"
    low = int(match.group("a"))
    if match.group("b"):
        return {f"{unit}_min": low, f"{unit}_max": int(match.group("b"))}
    return {unit: low}


def _backup_plan_params(text: str) -> dict[str, Any]:
    rules = []
    for match in _RULE.finditer(text):
        freq = match.group("freq").lower()
        schedule = "yearly" if freq == "annual" else freq
        rules.append({"name": schedule, "schedule": schedule, "retention": _retention(match)})
    selection: dict[str, Any] = {}
    for line in text.split("\n"):
        if re.search(r"\btag", line, re.IGNORECASE) and _TAG.search(line):
            tag = _TAG.search(line)
            assert tag is not None
            selection["tag"] = {tag.group("key"): tag.group("value")}
            break
    copy = _COPY.search(text)
    copy_mode = "no"
    if copy:
        line = next(t for t in text.split("\n") if copy.group(0) in t)
        copy_mode = "optional" if re.search(r"\boptional\b", line, re.IGNORECASE) else "required"
    return {"action": "backup_plan", "rules": rules, "selection": selection,
            "copy_to_other_region": copy_mode, "vault": "", "creates_vault": False}


def _vault_params(raw: str) -> dict[str, Any]:
    """The vault a plan's list names (in code or bold: `stdb-vault`), and whether one of its lines creates it."""
    named = _VAULT.search(raw)
    # a list item carries its sub-items joined with " - ": each is its own sentence
    lines = [line for line in re.split(r"\n| - ", raw) if re.search(r"\bvault\b", line, re.IGNORECASE)]
    return {"vault": (named.group("name") or named.group("name2")) if named else "",
            "creates_vault": any(_CREATE_VAULT.search(line) for line in lines)}


def console_params(items: list[str]) -> dict[str, Any]:
    """Provider parameters for a console list ("In the AWS Console: 1) ... 2) ...")."""
    raw = "\n".join(items)
    text = _plain(raw)
    if re.search(r"\bbackup\s+plan\b", text, re.IGNORECASE):
        return _backup_plan_params(text) | _vault_params(raw)
    if _FROM_SNAPSHOT.search(text):
        return {"action": "restore_volume_from_snapshot"}
    if _CREATE_VOLUME.search(text):
        return _volume_params(text, attach=bool(re.search(r"\battach\b", text, re.IGNORECASE)))
    return {"action": "manual", "items": items}


def item_params(item: str) -> dict[str, Any]:
    """Provider parameters for one manual procedure item ("Mount it at `/stdb`" -> mount_volume)."""
    text = _plain(item).strip()
    if _FROM_SNAPSHOT.search(text):
        return {"action": "restore_volume_from_snapshot"}
    if _CREATE_VOLUME.search(text):
        return _volume_params(text, attach=False)
    attach = _ATTACH.search(text)
    if attach and text.lower().startswith("attach"):
        role = (attach.group("role") or "").lower()
        instance = role if role not in ("", "ec2", "instance") else "target"
        return {"action": "attach_volume", "instance": instance}
    mount = _MOUNT.search(text)
    if mount:
        return {"action": "mount_volume", "mount_point": mount.group("point").rstrip(".,")}
    query = _QUERY.search(item)
    if query and _QUERY_WORDS.search(text):
        return {"action": "verify_query", "command": query.group("cmd").strip()}
    start = _START.search(text)
    if start:
        return {"action": "start_service", "service": start.group("what").lower()}
    return {"action": "manual"}


# ------------------------------------------------------------------------------------- extraction


@dataclass
class _PendingEditor:
    slot: int  # index in steps of the placeholder step
    line: int
    command: str
    path: str
    section: tuple[str, ...]
    prose: list[str] = field(default_factory=list)


class _Extractor:
    def __init__(self, path: str) -> None:
        self.path = path
        self.steps: list[RawStep] = []
        self.prose: list[Prose] = []
        self.headings: list[Heading] = []
        self.stack: list[tuple[int, str]] = []
        self.intro: tuple[int, str] = (0, "")
        self.pending: _PendingEditor | None = None

    @property
    def section(self) -> tuple[str, ...]:
        return tuple(title for _, title in self.stack)

    def run(self, elements: list[_Element]) -> None:
        for element in elements:
            if isinstance(element, _Heading):
                self._heading(element)
            elif isinstance(element, _Para):
                self._para(element)
            elif isinstance(element, _List):
                self._list(element)
            else:
                self._code(element, self.intro)
        self._close_pending()

    def _heading(self, heading: _Heading) -> None:
        self._close_pending()
        while self.stack and self.stack[-1][0] >= heading.level:
            self.stack.pop()
        self.stack.append((heading.level, heading.title))
        self.headings.append(Heading(heading.level, heading.title, heading.line, self.section))
        self.intro = (0, "")

    def _close_pending(self) -> None:
        if self.pending is not None:
            pending = self.pending
            where = " > ".join(pending.section) or "(document start)"
            raise RunbookError(self.path, pending.line,
                               f"editor step `{pending.command}` has no content block after it in "
                               f"section {where!r}",
                               hint="add the file content as a code block after the editor step")

    def _para(self, para: _Para) -> None:
        text = para.text
        self.prose.append(Prose(self.section, para.lines[0][0], para.lines[-1][0], text))
        self.intro = (para.lines[0][0], text)
        if self.pending is not None:
            self.pending.prose.append(text)

    # -- lists
    def _list(self, lst: _List) -> None:
        line, intro = self.intro
        console = CONSOLE_INTRO.search(intro)
        if console and self.pending is None:
            self._console_list(lst, line, intro)
        elif self.pending is None and (lst.ordered or _PROCEDURE_INTRO.search(intro)
                                       or any(i.codes for i in lst.items)):
            self._procedure_list(lst, line, intro)
        else:
            self._prose_list(lst)

    def _console_list(self, lst: _List, line: int, intro: str) -> None:
        first, last = lst.items[0].line, lst.items[-1].last_line
        source = [text for item in lst.items for _, text in item.source]
        self.steps.append(RawStep(
            StepKind.CONSOLE, self.section, first, last, "\n".join(source),
            params=console_params([item.text for item in lst.items]), notes=[intro],
            intro=intro, intro_line=line))
        for item in lst.items:
            for code in item.codes:
                self._code(code, (item.line, item.text), [item.first_text])
        self.intro = (0, "")

    def _procedure_list(self, lst: _List, line: int, intro: str) -> None:
        for item in lst.items:
            self.prose.append(Prose(self.section, item.line, item.last_line, item.text))
            if item.codes:
                for code in item.codes:
                    self._code(code, (item.line, item.text), [_item_label(item)])
                continue
            source = [text for _, text in item.source]
            self.steps.append(RawStep(
                StepKind.CONSOLE, self.section, item.line, item.last_line, "\n".join(source),
                params=item_params(item.text), notes=[intro] if intro else [],
                intro=intro, intro_line=line))
        self.intro = (0, "")

    def _prose_list(self, lst: _List) -> None:
        for item in lst.items:
            self.prose.append(Prose(self.section, item.line, item.last_line, item.text))
            if self.pending is not None:
                self.pending.prose.append(item.text)
            for code in item.codes:
                self._code(code, (item.line, item.text), [_item_label(item)])
            self.intro = (item.line, item.text)

    # -- code blocks
    def _code(self, code: _Code, intro: tuple[int, str], notes: list[str] | None = None) -> None:
        if self.pending is not None:
            self._content(code)
        else:
            reason = _not_run_reason(code, intro[1])
            if reason:
                self.steps.append(RawStep(
                    StepKind.NOT_RUN, self.section, code.start, code.end, "\n".join(code.lines),
                    reason=reason, intro=intro[1], intro_line=intro[0], notes=list(notes or [])))
            else:
                self._shell_block(code, intro, list(notes or []))
        self.intro = (0, "")

    def _content(self, code: _Code) -> None:
        pending = self.pending
        assert pending is not None
        prose = " ".join(pending.prose)
        body = [t for t in code.lines if t.strip()]
        if not _CONTENT_INTRO.search(prose) and body and looks_like_command(body[0]):
            self._close_pending()
        kind = StepKind.LINE_EDIT if _LINE_INTRO.search(prose) else StepKind.FILE_WRITE
        trimmed = _trim_blank_edges(code.lines)
        content = "\n".join(trimmed)
        body_line = code.body_line + _leading_blanks(code.lines)
        self.steps[pending.slot] = RawStep(
            kind, pending.section, pending.line, max(body_line + len(trimmed) - 1, pending.line),
            f"{pending.command}\n{content}", body=content, body_line=body_line,
            path=pending.path, editor_command=pending.command, notes=[p for p in pending.prose],
            intro=prose, intro_line=pending.line)
        self.pending = None

    def _shell_block(self, code: _Code, intro: tuple[int, str], notes: list[str]) -> None:
        chunks, trailing = split_commands(code.lines)
        first_step = len(self.steps)
        for chunk in chunks:
            line = code.body_line + chunk.offset
            end = line + len(chunk.lines) - 1
            path = _editor_path(chunk.text) if len(chunk.lines) == 1 else None
            if path is not None:
                self._open_editor(chunk, line, path)
                rest = _content_in_same_block(code, chunk.offset + 1)
                if rest is not None:  # `sudo nano F`, blank line, then F's content in one indented block
                    self._content(rest)
                    break
                continue
            self.steps.append(RawStep(
                StepKind.SHELL, self.section, line, end, chunk.text, body=chunk.text, body_line=line,
                notes=notes + chunk.notes, intro=intro[1], intro_line=intro[0]))
            notes = []
        if trailing:
            shell = [s for s in self.steps[first_step:] if s.kind is StepKind.SHELL]
            if shell:
                shell[-1].notes.extend(trailing)

    def _open_editor(self, chunk: _Chunk, line: int, path: str) -> None:
        self._close_pending()
        command = chunk.text.strip()
        self.steps.append(RawStep(StepKind.FILE_WRITE, self.section, line, line, command))  # filled later
        self.pending = _PendingEditor(len(self.steps) - 1, line, command, path, self.section)


def _content_in_same_block(code: _Code, offset: int) -> _Code | None:
    """The lines after an editor command in its own block, when they are file content, not commands."""
    rest = code.lines[offset:]
    body = [t for t in rest if t.strip()]
    if not body or _is_comment(body[0]) or looks_like_command(body[0]):
        return None
    line = code.body_line + offset
    return _Code(line, line + len(rest) - 1, line, rest, code.fenced, code.info)


def _item_label(item: _Item) -> str:
    return f"{item.marker} {item.first_text}"


def _leading_blanks(lines: list[str]) -> int:
    count = 0
    for line in lines:
        if line.strip():
            break
        count += 1
    return count


def _trim_blank_edges(lines: list[str]) -> list[str]:
    start = _leading_blanks(lines)
    end = len(lines)
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


# ------------------------------------------------------------------------------------------ entry


def _read(path: Path) -> tuple[bytes, str]:
    shown = str(path)
    if not path.exists():
        raise UsageError(f"runbook not found: {shown}", hint=RUNBOOK_HINT)
    if not path.is_file():
        raise RunbookError(shown, 1, "not a readable file", hint=RUNBOOK_HINT)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunbookError(shown, 1, f"cannot read the runbook: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise RunbookError(shown, line, "runbook is not UTF-8 text", hint="save it as UTF-8") from exc
    if not text.strip():
        raise RunbookError(shown, 1, "runbook is empty")
    return data, text


def split_lines(text: str) -> list[str]:
    """Source lines (1-based line N is index N-1). Only \\n splits lines; a \\r before it is dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_runbook(path: Path) -> ParsedRunbook:
    """Parse a runbook into typed raw steps. Raises UsageError (missing) or RunbookError (malformed)."""
    path = Path(path)
    data, text = _read(path)
    lines = split_lines(text)
    elements = _Scanner(str(path), lines).scan()
    extractor = _Extractor(str(path))
    extractor.run(elements)
    if not extractor.steps:
        raise RunbookError(str(path), 1, "no steps found: no code blocks and no console step lists",
                           hint="is this the self-hosting runbook?")
    return ParsedRunbook(path, text, hashlib.sha256(data).hexdigest(), extractor.headings,
                         extractor.steps, extractor.prose)
