"""The ssh backend's read-only guard: whether a shell command only reads, decided from its text before it is sent.

Why in code: on a host the kit did not build (someone's server), a suite that restarts a service or a probe
that writes a file would change that server. Without --allow-mutation every command the backend is handed is
parsed here and checked against an allow-list of programs (and, where a program can also write, of its
read-only sub-commands and flags). A refused command is never sent.

The guard fails closed: syntax it does not understand (here-documents, `[[ ]]`, functions, arithmetic
commands, computed program names, unterminated quotes...) is refused with a reason, never guessed. It is a
safety net against the kit's own mistakes (a mutating check run against an existing host), not a sandbox for
hostile command text: it does not try to outwit every trick bash has for running code hidden in data.

The parser is a small recursive-descent reading of bash syntax (lists, pipelines, `( )`, `{ }`, if/for/while/
until/case, `$( )`, backticks, `$(( ))`, `${ }`, process substitution, quoting, assignments, redirections).
It is written here rather than taken from a bash-parsing library because the probes the kit sends use
`case` and `$(( ))`, which such libraries commonly do not parse, and a guard must not depend on best effort.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.errors import EXIT_USAGE, KitError

MAX_DEPTH = 24  # nesting of substitutions/compound commands the guard follows before refusing


class MutationRefused(KitError):
    """A command that would (or might) change a host the kit did not build, refused before it was sent."""

    exit_code = EXIT_USAGE

    def __init__(self, command: str, reason: str, *, host: str = "") -> None:
        self.command = command
        self.reason = reason
        self.host = host
        shown = " ".join(command.split())
        shown = shown if len(shown) <= 160 else shown[:157] + "..."
        where = f" on {host}" if host else ""
        super().__init__(f"refused to run `{shown}`{where}: {reason}",
                         hint="the host was not changed; it needs --allow-mutation")


# what a read-only run never reads: password hashes, private keys, the CLI's token, cloud credentials, another
# process's environment (matched on the command's text, wherever the name appears: reading nothing secret is
# the rule, not reading it through a particular program)
_SECRETS = re.compile(
    r"/etc/g?shadow\b|\bgetent\s+g?shadow\b|/etc/ssh/ssh_host_\w+_key\b(?!\.pub)|privkey\d*\.pem|"
    r"\.key\b|\bid_(?:rsa|dsa|ecdsa|ed25519)\b(?!\.pub)|\bcli\.toml\b|\.aws/(?:credentials|config)\b|"
    r"/proc/[^/\s]+/environ\b|\.spacetime/|/etc/letsencrypt/accounts\b")


def refusal(command: str) -> str | None:
    """None when the shell command only reads; else a one-line reason it was refused."""
    secret = _SECRETS.search(command)
    if secret:
        return f"`{secret.group(0)}` names a secret (hashes, private keys, tokens, credentials): never read"
    try:
        parsed = parse(command)
    except _Unparsable as exc:
        return f"the read-only guard cannot parse it ({exc.reason})"
    except RecursionError:
        return "the read-only guard cannot parse it (nested too deeply)"
    for redirect in parsed.redirects:
        reason = _redirect_refusal(redirect)
        if reason:
            return reason
    for simple in parsed.commands:
        reason = _simple_refusal(simple)
        if reason:
            return reason
    return None


def env_refusal(env: dict[str, str] | None) -> str | None:
    """Environment variables handed to a command are assignments too: the same names are refused."""
    for name, value in (env or {}).items():
        reason = _assignment_refusal(name, value, literal_text=value)
        if reason:
            return reason
    return None


# =============================================================================================================
# Parsing
# =============================================================================================================


class _Unparsable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Word:
    """One shell word: its text after quote removal (expansions kept as written) and what may change it."""

    raw: str = ""
    text: str = ""
    literal: bool = True  # no expansion of any kind: the text is exactly what the program receives
    splits: bool = False  # an unquoted expansion, glob or brace: may become several words, or none
    lead: bool | None = None  # whether the first character is literal text (None: the word is empty)
    literal_text: str = ""  # only the quoted/escaped/plain literal parts (what an assignment stores verbatim)
    ansi_c: bool = False  # contains $'...'

    @property
    def stable(self) -> bool:
        """One argument whose start is fixed: it cannot turn into an option or into several arguments."""
        if self.literal:
            return True
        return not self.splits and self.lead is True and not self.text.startswith("-")


@dataclass
class Redirect:
    op: str
    target: Word


@dataclass
class Simple:
    words: list[Word]
    assignments: list[Word] = field(default_factory=list)


@dataclass
class Parsed:
    commands: list[Simple] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)


_META = " \t\n;&|()<>"
_OPERATORS = [";;&", ";;", ";&", ";", "&&", "&>>", "&>", "&", "||", "|&", "|", "(", ")", "<<<", "<<-", "<<", "<>",
              "<&", "<", ">>", ">&", ">|", ">"]
_REDIRECTS = {"&>>", "&>", "<<<", "<<-", "<<", "<>", "<&", "<", ">>", ">&", ">|", ">"}
_RESERVED = {"if", "then", "elif", "else", "fi", "for", "in", "do", "done", "while", "until", "case", "esac", "{", "}",
             "!", "time", "[[", "]]", "select", "function", "coproc"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\+?=")


@dataclass
class _Tok:
    kind: str  # "word" | "op" | "redir" | "eof"
    value: str = ""
    word: Word | None = None

    def is_reserved(self, *names: str) -> bool:
        return (self.kind == "word" and self.word is not None and self.word.literal and self.word.raw == self.word.text
                and self.word.text in names)


def parse(command: str) -> Parsed:
    """Every simple command (also those inside substitutions and compound commands) and every redirection."""
    sink = Parsed()
    parser = _Parser(command, 0, 0, sink)
    parser.parse_list(set())
    tok = parser.peek()
    if tok.kind != "eof":
        raise _Unparsable(f"unexpected {tok.value or (tok.word.raw if tok.word else '?')!r}")
    return sink


class _Parser:
    def __init__(self, src: str, pos: int, depth: int, sink: Parsed) -> None:
        if depth > MAX_DEPTH:
            raise _Unparsable("nested too deeply")
        self.src = src
        self.pos = pos
        self.depth = depth
        self.sink = sink
        self._ahead: _Tok | None = None
        self._w = Word()

    # ---- grammar ---------------------------------------------------------------------------------------------
    def parse_list(self, stops: set[str]) -> None:
        while True:
            self._skip_newlines()
            tok = self.peek()
            if tok.kind == "eof" or (tok.kind == "op" and tok.value in (")", ";;", ";&", ";;&")):
                return
            if stops and tok.is_reserved(*stops):
                return
            self._and_or()
            tok = self.peek()
            if tok.kind == "op" and tok.value in (";", "&", "\n"):
                self.next()
                continue
            return

    def _and_or(self) -> None:
        self._pipeline()
        while self.peek().kind == "op" and self.peek().value in ("&&", "||"):
            self.next()
            self._skip_newlines()
            self._pipeline()

    def _pipeline(self) -> None:
        if self.peek().is_reserved("!"):
            self.next()
        if self.peek().is_reserved("time"):
            self.next()
            tok = self.peek()
            if tok.kind == "word" and tok.word is not None and tok.word.text == "-p":
                self.next()
        self._command()
        while self.peek().kind == "op" and self.peek().value in ("|", "|&"):
            self.next()
            self._skip_newlines()
            self._command()

    def _command(self) -> None:
        tok = self.peek()
        if tok.kind == "op" and tok.value == "(":
            self.next()
            if self.peek().kind == "op" and self.peek().value == "(":
                raise _Unparsable("arithmetic commands (( )) are not understood")
            self.parse_list(set())
            self._expect_op(")")
            self._trailing_redirects()
            return
        if tok.kind == "word" and tok.is_reserved(*_RESERVED):
            name = tok.word.text if tok.word else ""
            handler = {"{": self._group, "if": self._if, "while": self._loop, "until": self._loop, "for": self._for,
                       "case": self._case}.get(name)
            if handler is None:
                if name in ("[[", "select", "function", "coproc"):
                    raise _Unparsable(f"`{name}` is not understood" + (" (use [ ])" if name == "[[" else ""))
                raise _Unparsable(f"unexpected {name!r}")
            self.next()
            handler()
            self._trailing_redirects()
            return
        self._simple()

    def _group(self) -> None:
        self.parse_list({"}"})
        self._expect_word("}")

    def _if(self) -> None:
        self.parse_list({"then"})
        self._expect_word("then")
        self.parse_list({"elif", "else", "fi"})
        while self.peek().is_reserved("elif"):
            self.next()
            self.parse_list({"then"})
            self._expect_word("then")
            self.parse_list({"elif", "else", "fi"})
        if self.peek().is_reserved("else"):
            self.next()
            self.parse_list({"fi"})
        self._expect_word("fi")

    def _loop(self) -> None:
        self.parse_list({"do"})
        self._do_done()

    def _do_done(self) -> None:
        self._skip_newlines()
        self._expect_word("do")
        self.parse_list({"done"})
        self._expect_word("done")

    def _for(self) -> None:
        tok = self.next()
        if tok.kind != "word" or tok.word is None or not _NAME.fullmatch(tok.word.raw):
            raise _Unparsable("only `for NAME in WORDS; do ...; done` is understood")
        self._skip_newlines()
        if self.peek().is_reserved("in"):
            self.next()
            while self.peek().kind == "word":
                self.next()  # the words' own substitutions were parsed while lexing them
        tok = self.peek()
        if tok.kind == "op" and tok.value in (";", "\n"):
            self.next()
        self._do_done()

    def _case(self) -> None:
        if self.next().kind != "word":
            raise _Unparsable("`case` needs a word")
        self._skip_newlines()
        self._expect_word("in")
        while True:
            self._skip_newlines()
            if self.peek().is_reserved("esac"):
                self.next()
                return
            if self.peek().kind == "op" and self.peek().value == "(":
                self.next()
            while True:
                if self.next().kind != "word":
                    raise _Unparsable("a case pattern must be a word")
                tok = self.next()
                if tok.kind == "op" and tok.value == "|":
                    continue
                if tok.kind == "op" and tok.value == ")":
                    break
                raise _Unparsable("a case pattern must end with )")
            self.parse_list({"esac"})
            tok = self.peek()
            if tok.kind == "op" and tok.value in (";;", ";&", ";;&"):
                self.next()
            elif not tok.is_reserved("esac"):
                raise _Unparsable("a case item must end with ;;")

    def _simple(self) -> None:
        words: list[Word] = []
        assignments: list[Word] = []
        seen = False
        while True:
            tok = self.peek()
            if tok.kind == "redir":
                self.next()
                self._redirect(tok.value)
                seen = True
            elif tok.kind == "word" and tok.word is not None:
                self.next()
                if not words and _ASSIGNMENT.match(tok.word.raw):
                    assignments.append(tok.word)
                else:
                    words.append(tok.word)
                seen = True
            else:
                break
        if not seen:
            tok = self.peek()
            raise _Unparsable(f"unexpected {tok.value!r}" if tok.kind != "eof" else "a command is missing")
        self.sink.commands.append(Simple(words, assignments))

    def _redirect(self, op: str) -> None:
        if op in ("<<", "<<-"):
            raise _Unparsable("here-documents are not understood")
        tok = self.next()
        if tok.kind != "word" or tok.word is None:
            raise _Unparsable(f"redirection {op} without a target")
        self.sink.redirects.append(Redirect(op, tok.word))

    def _trailing_redirects(self) -> None:
        while self.peek().kind == "redir":
            self._redirect(self.next().value)

    def _expect_op(self, op: str) -> None:
        tok = self.next()
        if tok.kind != "op" or tok.value != op:
            raise _Unparsable(f"expected {op!r}")

    def _expect_word(self, name: str) -> None:
        tok = self.next()
        if not tok.is_reserved(name):
            raise _Unparsable(f"expected `{name}`")

    def _skip_newlines(self) -> None:
        while self.peek().kind == "op" and self.peek().value == "\n":
            self.next()

    # ---- tokens ----------------------------------------------------------------------------------------------
    def peek(self) -> _Tok:
        if self._ahead is None:
            self._ahead = self._lex()
        return self._ahead

    def next(self) -> _Tok:
        tok = self.peek()
        self._ahead = None
        return tok

    def _lex(self) -> _Tok:
        src, n = self.src, len(self.src)
        while self.pos < n:
            c = src[self.pos]
            if c in " \t":
                self.pos += 1
            elif src.startswith("\\\n", self.pos):
                self.pos += 2
            elif c == "#":
                end = src.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                break
        if self.pos >= n:
            return _Tok("eof")
        c = src[self.pos]
        if c == "\n":
            self.pos += 1
            return _Tok("op", "\n")
        if src.startswith(("<(", ">("), self.pos):
            return _Tok("word", word=self._word())
        fd = re.match(r"\d+(?=[<>])", src[self.pos:])
        if fd:
            self.pos += fd.end()
        for op in _OPERATORS:
            if src.startswith(op, self.pos):
                self.pos += len(op)
                return _Tok("redir" if op in _REDIRECTS else "op", op)
        if fd:  # digits before < or > always form a redirection operator
            raise _Unparsable("bad redirection")
        return _Tok("word", word=self._word())

    # ---- words -----------------------------------------------------------------------------------------------
    def _lit(self, text: str) -> None:
        w = self._w
        w.text += text
        w.literal_text += text
        if w.lead is None and text:
            w.lead = True

    def _exp(self, text: str, *, quoted: bool) -> None:
        w = self._w
        w.text += text
        w.literal = False
        if not quoted:
            w.splits = True
        if w.lead is None:
            w.lead = False

    def _word(self) -> Word:
        src, n = self.src, len(self.src)
        start = self.pos
        outer, self._w = self._w, Word()
        try:
            while self.pos < n:
                c = src[self.pos]
                if c in "<>" and src.startswith("(", self.pos + 1):
                    if self.pos != start:
                        break
                    end = self._subparse(self.pos + 2)
                    self._exp(src[self.pos:end], quoted=True)
                    self.pos = end
                    continue
                if c in _META:
                    break
                if c == "\\":
                    if src.startswith("\n", self.pos + 1):
                        self.pos += 2
                    elif self.pos + 1 < n:
                        self._lit(src[self.pos + 1])
                        self.pos += 2
                    else:
                        self._lit("\\")
                        self.pos += 1
                elif c == "'":
                    end = src.find("'", self.pos + 1)
                    if end < 0:
                        raise _Unparsable("unterminated '")
                    self._lit(src[self.pos + 1:end])  # '' alone: an empty argument, still literal
                    self.pos = end + 1
                elif c == '"':
                    self.pos = self._dquote(self.pos + 1)
                elif c == "$":
                    self.pos = self._dollar(self.pos, quoted=False)
                elif c == "`":
                    end = self._backtick(self.pos)
                    self._exp(src[self.pos:end], quoted=False)
                    self.pos = end
                elif c in "*?":
                    self._glob(c)
                elif c == "[":
                    rest = re.match(r"[^\s;&|()<>]*", src[self.pos + 1:])
                    if rest and "]" in rest.group(0):
                        self._glob(c)
                    else:
                        self._lit(c)
                        self.pos += 1
                elif c == "{":
                    rest = re.match(r"[^\s;&|()<>]*", src[self.pos + 1:])
                    body = rest.group(0) if rest else ""
                    if "}" in body and ("," in body.split("}")[0] or ".." in body.split("}")[0]):
                        self._glob(c)  # brace expansion: may become several words
                    else:
                        self._lit(c)
                        self.pos += 1
                elif c == "~" and self.pos == start:
                    self._exp("~", quoted=True)
                    self.pos += 1
                else:
                    self._lit(c)
                    self.pos += 1
            word = self._w
            word.raw = src[start:self.pos]
            return word
        finally:
            self._w = outer

    def _glob(self, c: str) -> None:
        self._w.text += c
        self._w.literal = False
        self._w.splits = True
        if self._w.lead is None:
            self._w.lead = False
        self.pos += 1

    def _dquote(self, pos: int) -> int:
        src, n = self.src, len(self.src)
        while pos < n:
            c = src[pos]
            if c == '"':
                return pos + 1
            if c == "\\":
                nxt = src[pos + 1:pos + 2]
                if nxt in ("$", "`", '"', "\\"):
                    self._lit(nxt)
                    pos += 2
                elif nxt == "\n":
                    pos += 2
                else:
                    self._lit("\\")
                    pos += 1
            elif c == "$":
                pos = self._dollar(pos, quoted=True)
            elif c == "`":
                end = self._backtick(pos)
                self._exp(src[pos:end], quoted=True)
                pos = end
            else:
                self._lit(c)
                pos += 1
        raise _Unparsable('unterminated "')

    def _dollar(self, pos: int, *, quoted: bool) -> int:
        src = self.src
        nxt = src[pos + 1:pos + 2]
        if src.startswith("$((", pos):
            end = self._arith(pos + 3)
        elif nxt == "(":
            end = self._subparse(pos + 2)
        elif nxt == "{":
            end = self._brace_param(pos + 2)
        elif nxt == "'" and not quoted:
            end = pos + 2
            while end < len(src) and src[end] != "'":
                end += 2 if src[end] == "\\" else 1
            if end >= len(src):
                raise _Unparsable("unterminated $'")
            end += 1
            self._exp(src[pos:end], quoted=True)
            self._w.ansi_c = True
            return end
        elif nxt == '"' and not quoted:
            return self._dquote(pos + 2)
        elif nxt and (nxt.isalpha() or nxt == "_"):
            match = _NAME.match(src, pos + 1)
            end = match.end() if match else pos + 2
        elif nxt and nxt in "0123456789@*#?$!-":
            end = pos + 2
        else:
            self._lit("$")
            return pos + 1
        self._exp(src[pos:end], quoted=quoted)
        return end

    def _subparse(self, pos: int) -> int:
        """A `$( )` / `<( )` / `>( )` body: its commands join the sink; returns the position after the `)`."""
        child = _Parser(self.src, pos, self.depth + 1, self.sink)
        child.parse_list(set())
        tok = child.next()
        if tok.kind != "op" or tok.value != ")":
            raise _Unparsable("unterminated $(")
        return child.pos

    def _backtick(self, pos: int) -> int:
        src, n = self.src, len(self.src)
        body: list[str] = []
        i = pos + 1
        while i < n and src[i] != "`":
            if src[i] == "\\" and i + 1 < n and src[i + 1] in "`$\\":
                body.append(src[i + 1])
                i += 2
            else:
                body.append(src[i])
                i += 1
        if i >= n:
            raise _Unparsable("unterminated `")
        child = _Parser("".join(body), 0, self.depth + 1, self.sink)
        child.parse_list(set())
        if child.peek().kind != "eof":
            raise _Unparsable("cannot parse a `...` substitution")
        return i + 1

    def _arith(self, pos: int) -> int:
        """`$(( ))`: only numbers, names, operators and nested substitutions (no array subscripts, no quotes)."""
        src, n = self.src, len(self.src)
        outer, self._w = self._w, Word()
        try:
            depth = 0
            while pos < n:
                c = src[pos]
                if c == "(":
                    depth += 1
                    pos += 1
                elif c == ")":
                    if depth == 0:
                        if src.startswith("))", pos):
                            return pos + 2
                        raise _Unparsable("unbalanced $(( ))")
                    depth -= 1
                    pos += 1
                elif c == "$":
                    pos = self._dollar(pos, quoted=True)
                elif c == "`":
                    pos = self._backtick(pos)
                elif c.isalnum() or c in "_ \t\n+-*/%<>=!&|^~?:,#":
                    pos += 1
                else:
                    raise _Unparsable(f"{c!r} inside $(( )) is not understood")
            raise _Unparsable("unterminated $((")
        finally:
            self._w = outer

    def _brace_param(self, pos: int) -> int:
        """`${...}`: nested substitutions are parsed; indirection, transformations and subscripts refused."""
        src, n = self.src, len(self.src)
        if src.startswith("!", pos):
            raise _Unparsable("indirect expansion ${!...} is not understood")
        outer, self._w = self._w, Word()
        start = pos
        try:
            depth = 0
            while pos < n:
                c = src[pos]
                if c == "}" and depth == 0:
                    body = src[start:pos]
                    if "[" in body:
                        raise _Unparsable("array subscripts in ${...} are not understood")
                    if re.search(r"@[A-Za-z]", body):
                        raise _Unparsable("${...@...} transformations are not understood")
                    return pos + 1
                if c == "{":
                    depth += 1
                    pos += 1
                elif c == "}":
                    depth -= 1
                    pos += 1
                elif c == "\\":
                    pos += 2
                elif c == "'":
                    end = src.find("'", pos + 1)
                    if end < 0:
                        raise _Unparsable("unterminated '")
                    pos = end + 1
                elif c == '"':
                    pos = self._dquote(pos + 1)
                elif c == "$":
                    pos = self._dollar(pos, quoted=True)
                elif c == "`":
                    pos = self._backtick(pos)
                else:
                    pos += 1
            raise _Unparsable("unterminated ${")
        finally:
            self._w = outer


# =============================================================================================================
# Policy
# =============================================================================================================

_WRITABLE_SINKS = {"/dev/null", "/dev/stdout", "/dev/stderr"}
# variables that change what a later program is or does (which binary runs, what the shell sources)
_DANGEROUS_VARIABLES = {"PATH", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "PROMPT_COMMAND",
                        "GLOBIGNORE", "CDPATH", "EDITOR", "VISUAL", "PAGER", "SYSTEMD_PAGER", "SYSTEMD_EDITOR"}
_BIN_DIRS = {"/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"}
_SOURCEABLE = {"/etc/os-release", "/usr/lib/os-release", "/etc/lsb-release"}


def _redirect_refusal(redirect: Redirect) -> str | None:
    op, target = redirect.op, redirect.target
    if op in ("<", "<<<"):
        return None  # reading a file, or a string as input
    if op in (">&", "<&") and target.literal and (target.text.isdigit() or target.text == "-"):
        return None  # duplicating or closing a file descriptor
    if op == "<&":
        return f"redirection `<&{target.raw}` is not understood"
    if op == "<>":
        return f"redirection `<>{target.raw}` opens a file for writing"
    if target.literal and target.text in _WRITABLE_SINKS:
        return None
    return f"redirection `{op} {target.raw}` writes a file"


def _assignment_refusal(name: str, value: str, *, literal_text: str, ansi_c: bool = False) -> str | None:
    if name in _DANGEROUS_VARIABLES or name.startswith("LD_"):
        return f"setting {name} changes which programs run or how the shell behaves"
    if "$(" in literal_text or "`" in literal_text or ansi_c:
        return f"the value of {name} holds shell code"
    return None


def _simple_refusal(simple: Simple) -> str | None:
    for word in simple.assignments:
        name = _ASSIGNMENT.match(word.raw)
        assert name is not None
        var = name.group(0).rstrip("+=")
        reason = _assignment_refusal(var, word.text, literal_text=word.literal_text, ansi_c=word.ansi_c)
        if reason:
            return reason
    if not simple.words:
        return None
    return check_words(simple.words)


def check_words(words: list[Word]) -> str | None:
    """The refusal reason for one simple command (program and arguments), or None."""
    program = words[0]
    if not program.literal:
        return f"the program name `{program.raw}` is computed at run time"
    name = _program_name(program.text)
    if name is None:
        return f"`{program.text}` is not on the read-only allow-list"
    checker = _CHECKERS.get(name)
    if checker is None:
        if name in _FREE:
            return None
        return f"`{name}` is not on the read-only allow-list"
    return checker(name, words[1:])


def _program_name(text: str) -> str | None:
    if "/" not in text:
        return text
    directory, _, base = text.rpartition("/")
    if base == "spacetime":
        return "spacetime"
    if directory in _BIN_DIRS and base:
        return base
    return None


# ---- option scanning ------------------------------------------------------------------------------------------
@dataclass
class _Options:
    opts: list[tuple[str, str | None]]
    positional: list[str]
    rest: list[str] = field(default_factory=list)  # with stop_at_positional: the first positional and after

    def has(self, *names: str) -> bool:
        return any(o in names for o, _ in self.opts)

    def long(self, *names: str) -> str | None:
        """The first given long option that is a (GNU-abbreviated) prefix of one of `names`."""
        for option, _ in self.opts:
            if option.startswith("--") and len(option) > 2 and any(n.startswith(option) for n in names):
                return option
        return None


def _scan(args: list[str], *, short_arg: str = "", long_arg: frozenset[str] = frozenset(), optional_arg: str = "",
          stop_at_positional: bool = False) -> _Options:
    opts: list[tuple[str, str | None]] = []
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positional.extend(args[i + 1:])
            if stop_at_positional:
                return _Options(opts, positional, args[i + 1:])
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if eq:
                opts.append((name, value))
            elif name in long_arg and i + 1 < len(args):
                i += 1
                opts.append((name, args[i]))
            else:
                opts.append((name, None))
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                ch = arg[j]
                if ch in optional_arg:
                    opts.append(("-" + ch, arg[j + 1:] or None))
                    break
                if ch in short_arg:
                    if arg[j + 1:]:
                        opts.append(("-" + ch, arg[j + 1:]))
                    elif i + 1 < len(args):
                        i += 1
                        opts.append(("-" + ch, args[i]))
                    else:
                        opts.append(("-" + ch, None))
                    break
                opts.append(("-" + ch, None))
                j += 1
        else:
            if stop_at_positional:
                return _Options(opts, args[i:], args[i:])
            positional.append(arg)
        i += 1
    return _Options(opts, positional)


Checker = Callable[[str, list[Word]], "str | None"]


def _strict(check: Callable[[str, list[str]], str | None]) -> Checker:
    """Programs with write flags or sub-commands: every argument must be fixed text the guard can read."""

    def checker(name: str, args: list[Word]) -> str | None:
        for arg in args:
            if not arg.stable:
                return f"{name}: the argument `{arg.raw}` is computed at run time, so the guard cannot check it"
        return check(name, [a.text for a in args])

    return checker


# ---- programs ---------------------------------------------------------------------------------------------------
# every argument is harmless: these only read files or the system and write to stdout
_FREE = {"cat", "head", "tail", "grep", "egrep", "fgrep", "cut", "tr", "wc", "echo", "true", "false", "id", "getent",
         "ps", "pgrep", "uname", "readlink", "realpath", "dirname", "basename", "ls", "stat", "du", "df", "lsblk",
         "blkid", "findmnt", "sha256sum", "md5sum", "sha1sum", "sha512sum", "sleep", "seq", "dpkg-query", "whoami",
         "nproc", "free", "uptime", "which", "cmp", "diff", "comm", "pwd", ":", "cd", "break", "continue", "exit",
         "return", "set", "shift", "wait"}


def _sed(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="efl", long_arg=frozenset({"--expression", "--file", "--line-length"}))
    if o.has("-i") or o.long("--in-place"):
        return "sed -i edits files in place"
    if o.has("-f") or o.long("--file"):
        return "sed -f: the guard cannot read a script file"
    allowed = {"-n", "-e", "-E", "-r", "-u", "-s", "-z", "-l"}
    for option, _ in o.opts:
        if option.startswith("--"):
            if not any(n.startswith(option) for n in ("--quiet", "--silent", "--expression", "--regexp-extended",
                                                      "--unbuffered", "--separate", "--null-data", "--posix",
                                                      "--debug", "--sandbox", "--line-length")):
                return f"sed {option} is not understood"
        elif option not in allowed:
            return f"sed {option} is not understood"
    scripts = [v or "" for opt, v in o.opts if opt == "-e" or (opt.startswith("--") and "--expression".startswith(opt))]
    if not scripts:
        if not o.positional:
            return None
        scripts = [o.positional[0]]
    for script in scripts:
        reason = _sed_script_refusal(script)
        if reason:
            return reason
    return None


def _sed_script_refusal(script: str) -> str | None:
    """Walk a sed script's commands: `w`, `W`, `e` and the s///w, s///e flags write files or run commands."""
    i, n = 0, len(script)

    def skip_regex(pos: int, delim: str) -> int:
        while pos < n and script[pos] != delim:
            if script[pos] == "\\":
                pos += 1
            elif script[pos] == "\n":
                raise ValueError
            pos += 1
        if pos >= n:
            raise ValueError
        return pos + 1

    try:
        while i < n:
            while i < n and script[i] in " \t\n;":
                i += 1
            if i >= n:
                break
            for _ in range(2):  # up to two addresses
                if i < n and (script[i].isdigit() or script[i] == "$"):
                    i += 1
                    while i < n and (script[i].isdigit() or script[i] == "~"):
                        i += 1
                elif i < n and script[i] == "/":
                    i = skip_regex(i + 1, "/")
                    while i < n and script[i] in "IM":
                        i += 1
                elif i + 1 < n and script[i] == "\\":
                    i = skip_regex(i + 2, script[i + 1])
                elif i < n and script[i] in "+~" and _ > 0:
                    i += 1
                    while i < n and script[i].isdigit():
                        i += 1
                if i < n and script[i] == "," and _ == 0:
                    i += 1
                    continue
                break
            while i < n and script[i] in " \t!":
                i += 1
            if i >= n:
                return "sed: a script without a command is not understood"
            cmd = script[i]
            i += 1
            if cmd in "{}=dDgGhHnNpPxzlqQLF":
                while i < n and script[i] in " \t0123456789":
                    i += 1
            elif cmd == "#":
                end = script.find("\n", i)
                i = n if end < 0 else end
            elif cmd in ":btTv":
                while i < n and script[i] not in ";\n}":
                    i += 1
            elif cmd in "aicrR":
                end = script.find("\n", i)  # text to append/insert/change, or a file to read: to end of line
                i = n if end < 0 else end
            elif cmd in "wWe":
                return f"sed `{cmd}` writes a file or runs a command"
            elif cmd in "sy":
                if i >= n or script[i] in "\\\n":
                    return f"sed `{cmd}` with that delimiter is not understood"
                delim = script[i]
                i = skip_regex(skip_regex(i + 1, delim), delim)
                if cmd == "s":
                    while i < n and script[i] not in ";\n}":
                        if script[i] in "we":
                            return f"sed s///{script[i]} writes a file or runs a command"
                        if script[i] not in "gpiImM0123456789 \t":
                            return f"sed s/// flag {script[i]!r} is not understood"
                        i += 1
            else:
                return f"sed command {cmd!r} is not understood"
    except ValueError:
        return "sed: the script is not understood"
    return None


_AWK_DANGER = re.compile(r"\bsystem\s*\(|\bgetline\b|(?<!\|)\|(?!\|)|\bprintf?\b[^;}\n]*>|@")


def _awk(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="Fvf", stop_at_positional=True)
    for option, _ in o.opts:
        if option == "-f":
            return f"{name} -f: the guard cannot read a program file"
        if option not in ("-F", "-v", "--"):
            return f"{name} {option} is not understood"
    if not o.rest:
        return f"{name} without a program is not understood"
    if _AWK_DANGER.search(o.rest[0]):
        return f"{name}: the program may write a file or run a command (system, getline, |, print >, @)"
    return None


def _sort(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="ktoST", long_arg=frozenset({"--key", "--field-separator", "--output",
                                                           "--buffer-size", "--temporary-directory"}))
    if o.has("-o") or o.long("--output"):
        return "sort -o writes a file"
    if o.long("--compress-program"):
        return "sort --compress-program runs a program"
    return None


def _uniq(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="fsw", long_arg=frozenset({"--skip-fields", "--skip-chars", "--check-chars",
                                                         "--all-repeated", "--group"}))
    if len(o.positional) > 1:
        return "uniq with an output file writes it"
    return None


_FIND_WRITES = {"-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprint0", "-fprintf", "-fls"}


def _find(name: str, args: list[str]) -> str | None:
    for arg in args:
        if arg in _FIND_WRITES:
            return f"find {arg} changes files or runs commands"
    return None


def _xargs(name: str, args: list[Word]) -> str | None:
    texts = []
    for arg in args:
        if not arg.stable:
            return f"xargs: the argument `{arg.raw}` is computed at run time"
        texts.append(arg.text)
    o = _scan(texts, short_arg="adEILnPs", optional_arg="eil", stop_at_positional=True,
              long_arg=frozenset({"--arg-file", "--delimiter", "--max-args", "--max-lines", "--max-procs",
                                  "--max-chars", "--process-slot-var"}))
    if o.has("-p") or o.long("--interactive", "--open-tty"):
        return "xargs -p/-o is interactive"
    if not o.rest:
        return None
    program = _program_name(o.rest[0])
    if program not in _FREE or program in (":", "cd", "exit", "set", "shift", "wait", "break", "continue", "return"):
        return f"xargs {o.rest[0]}: only a program that reads whatever arguments it gets may follow xargs"
    return None


def _env(name: str, args: list[Word]) -> str | None:
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.stable:
            return f"env: the argument `{arg.raw}` is computed at run time"
        text = arg.text
        if text in ("-i", "-", "--ignore-environment", "-0", "--null", "-v", "--debug"):
            i += 1
        elif text in ("-u", "-C"):
            i += 2
        elif text.startswith(("--unset=", "--chdir=", "-u", "-C")):
            i += 1
        elif text == "--":
            i += 1
            break
        elif text.startswith("-"):
            return f"env {text} is not understood"
        else:
            break
    while i < len(args) and _ASSIGNMENT.match(args[i].raw):
        var = args[i].text.partition("=")[0].rstrip("+")
        reason = _assignment_refusal(var, args[i].text, literal_text=args[i].literal_text, ansi_c=args[i].ansi_c)
        if reason:
            return reason
        i += 1
    if i >= len(args):
        return None
    return check_words(args[i:])


def _timeout(name: str, args: list[Word]) -> str | None:
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.stable:
            return f"timeout: the argument `{arg.raw}` is computed at run time"
        text = arg.text
        if text in ("-k", "-s"):
            i += 2
        elif text in ("--foreground", "-v", "--verbose", "-p", "--preserve-status") or \
                text.startswith(("--kill-after=", "--signal=", "-k", "-s")):
            i += 1
        elif text == "--":
            i += 1
            break
        elif text.startswith("-"):
            return f"timeout {text} is not understood"
        else:
            break
    if i + 1 >= len(args):
        return None if i < len(args) else "timeout without a duration"
    return check_words(args[i + 1:])


def _sudo(name: str, args: list[Word]) -> str | None:
    """`sudo [-n] [-H] [-u USER] COMMAND...`: another user for a command that is itself read-only (the suites read
    the database as its service user; the backend's connect check runs `sudo -n true`). Any other sudo option
    (a shell, -E, -i, -s, editing) refuses."""
    i = 0
    user = ""
    while i < len(args):
        arg = args[i]
        if not arg.stable:
            return f"sudo: the argument `{arg.raw}` is computed at run time"
        if arg.text in ("-n", "-H", "--non-interactive", "--set-home"):
            i += 1
        elif arg.text == "-u" and i + 1 < len(args) and args[i + 1].stable:
            user = args[i + 1].text
            i += 2
        elif arg.text.startswith("-"):
            return f"sudo {arg.text} is not on the read-only allow-list (only -n, -H and -u USER)"
        else:
            break
    del user  # any user: what is judged is the command, which must itself be read-only
    if i >= len(args):
        return "sudo without a command"
    return check_words(args[i:])


def _printf(name: str, args: list[Word]) -> str | None:
    if args and (not args[0].stable or args[0].text.startswith("-v")):
        return "printf -v assigns a variable the guard cannot follow"
    return None


def _test(name: str, args: list[Word]) -> str | None:
    if any(a.literal and a.text == "-v" for a in args):
        return f"{name} -v is not understood"
    return None


def _command(name: str, args: list[Word]) -> str | None:
    if args and args[0].literal and re.fullmatch(r"-p?[vV]p?", args[0].text):
        return None  # `command -v NAME`: where a program is, nothing runs
    return "`command` runs a program (only `command -v NAME` is read-only)"


def _read(name: str, args: list[Word]) -> str | None:
    for arg in args:
        if not arg.stable or "[" in arg.text:
            return f"read `{arg.raw}`: only plain variable names are understood"
    return None


def _source(name: str, args: list[Word]) -> str | None:
    if len(args) == 1 and args[0].literal and args[0].text in _SOURCEABLE:
        return None
    return f"`{name}` runs the shell code of a file (only {', '.join(sorted(_SOURCEABLE))} are read)"


def _export(name: str, args: list[Word]) -> str | None:
    for arg in args:
        if not arg.stable:
            return f"export: the argument `{arg.raw}` is computed at run time"
        var = arg.text.partition("=")[0].rstrip("+")
        reason = _assignment_refusal(var, arg.text, literal_text=arg.literal_text, ansi_c=arg.ansi_c)
        if reason:
            return reason
    return None


_SYSTEMCTL_READ = {"is-active", "is-enabled", "is-failed", "is-system-running", "show", "status", "cat",
                   "list-units", "list-timers", "list-unit-files", "list-sockets", "list-dependencies", "list-jobs",
                   "list-automounts", "list-paths", "list-machines", "get-default", "show-environment", "help"}


def _systemctl(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="tpPnoHMs", long_arg=frozenset({
        "--type", "--property", "--state", "--lines", "--output", "--host", "--machine", "--signal", "--kill-whom",
        "--kill-value", "--root", "--image", "--job-mode", "--what", "--timestamp", "--when", "--message",
        "--preset-mode", "--boot-loader-entry", "--boot-loader-menu", "--reboot-argument", "--drop-in"}))
    verb = o.positional[0] if o.positional else "list-units"
    if verb not in _SYSTEMCTL_READ:
        return f"`systemctl {verb}` is not read-only"
    return None


_JOURNALCTL_WRITES = ("--rotate", "--vacuum-size", "--vacuum-files", "--vacuum-time", "--flush", "--sync",
                      "--relinquish-var", "--smart-relinquish-var", "--setup-keys", "--update-catalog")


def _journalctl(name: str, args: list[str]) -> str | None:
    # every word is looked at (not only those in option position): journalctl has options with optional values
    # (-b), and a value the guard took for an option's must not hide an option that writes
    for arg in args:
        option = arg.partition("=")[0]
        if option.startswith("--") and len(option) > 2 and any(w.startswith(option) for w in _JOURNALCTL_WRITES):
            return f"journalctl {option} changes the journal"
    return None


_ANALYZE_READ = {"time", "blame", "critical-chain", "dump", "dot", "plot", "verify", "security", "calendar",
                 "timespan", "timestamp", "cat-config", "unit-files", "unit-paths", "exit-status", "capability",
                 "condition", "syscall-filter", "filesystems", "inspect-elf", "fdstore", "image-policy", "has-tpm2",
                 "architectures", "smbios11", "help"}


def _systemd_analyze(name: str, args: list[str]) -> str | None:
    o = _scan(args, long_arg=frozenset({"--root", "--image", "--host", "--machine", "--iterations", "--base-time",
                                        "--from-pattern", "--to-pattern", "--fuzz",
                                        "--security-policy", "--threshold", "--json", "--profile", "--scale-svg"}),
              short_arg="HM")
    if not o.positional:
        return None
    verb = o.positional[0]
    if verb in ("log-level", "log-target", "service-watchdogs") and len(o.positional) == 1:
        return None
    if verb not in _ANALYZE_READ:
        return f"`systemd-analyze {verb}` is not read-only"
    return None


def _nginx(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="cpegs")
    for option, _ in o.opts:
        if option in ("-s", "-g"):
            return f"nginx {option} signals the server or changes its configuration"
        if option not in ("-t", "-T", "-v", "-V", "-q", "-h", "-?", "-c", "-p", "-e"):
            return f"nginx {option} is not understood"
    if o.positional or not o.has("-t", "-T", "-v", "-V", "-h", "-?"):
        return "nginx without -t/-T/-v/-V starts a server"
    return None


def _certbot(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="dcm", long_arg=frozenset({"--cert-name", "--config-dir", "--work-dir", "--logs-dir",
                                                         "--domains", "--domain", "--config"}))
    if o.positional:
        if o.positional[0] == "certificates" and len(o.positional) == 1:
            return None
        return f"`certbot {o.positional[0]}` is not read-only (only `certbot certificates` is)"
    if o.opts and all(opt in ("--version", "-h", "--help") for opt, _ in o.opts):
        return None
    return "certbot without a sub-command obtains and installs a certificate"


_OPENSSL_READ = {"x509", "s_client", "version", "verify", "ciphers"}
_OPENSSL_WRITES = {"-out", "-keyout", "-sess_out", "-keylogfile", "-msgfile", "-writerand", "-CAcreateserial",
                   "-CAserial", "-rand_out"}


def _openssl(name: str, args: list[str]) -> str | None:
    if not args or args[0] not in _OPENSSL_READ:
        return f"`openssl {args[0] if args else ''}` is not on the read-only list ({', '.join(sorted(_OPENSSL_READ))})"
    for arg in args[1:]:
        if arg in _OPENSSL_WRITES:
            return f"openssl {args[0]} {arg} writes a file"
    return None


_CURL_SHORT_ARG = "AbcCdDeEFHKmoPQrtTuUwxXyYz"
_CURL_LONG_ARG = frozenset({
    "--user-agent", "--cookie", "--cookie-jar", "--continue-at", "--data", "--data-ascii", "--data-binary",
    "--data-raw", "--data-urlencode", "--dump-header", "--referer", "--cert", "--form", "--form-string", "--header",
    "--config", "--max-time", "--output", "--ftp-port", "--quote", "--range", "--telnet-option", "--upload-file",
    "--user", "--proxy-user", "--write-out", "--proxy", "--request", "--speed-time", "--speed-limit", "--time-cond",
    "--url", "--resolve", "--connect-timeout", "--cacert", "--capath", "--key", "--connect-to", "--retry",
    "--retry-delay", "--retry-max-time", "--trace", "--trace-ascii", "--stderr", "--libcurl", "--json", "--hsts",
    "--alt-svc", "--etag-save", "--etag-compare", "--output-dir", "--unix-socket", "--interface", "--dns-servers",
    "--max-filesize", "--max-redirs", "--noproxy", "--ciphers", "--tls-max", "--cert-type", "--pinnedpubkey",
    "--url-query", "--variable", "--expand-url", "--request-target", "--aws-sigv4", "--oauth2-bearer"})
_CURL_BODY = ("-d", "-F", "-T", "--data", "--data-ascii", "--data-binary", "--data-raw", "--data-urlencode", "--form",
              "--form-string", "--upload-file", "--json", "-Q", "--quote", "-K", "--config", "-t", "--telnet-option",
              "--ftp-create-dirs", "--create-dirs", "--mail-rcpt", "--mail-from", "--post301", "--post302", "--post303")
_CURL_FILES = ("-o", "--output", "-D", "--dump-header", "-c", "--cookie-jar", "--trace", "--trace-ascii", "--stderr",
               "--libcurl", "--hsts", "--alt-svc", "--etag-save")


def _curl(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg=_CURL_SHORT_ARG, long_arg=_CURL_LONG_ARG)
    urls = list(o.positional)
    for option, value in o.opts:
        if option in _CURL_BODY or option.startswith(("--data", "--form", "--upload", "--json")):
            return f"curl {option} sends a body, a file or commands"
        if option in ("-X", "--request") and value not in ("GET", "HEAD"):
            return f"curl {option} {value} is not a GET/HEAD request"
        if option in _CURL_FILES and value not in ("/dev/null", "-"):
            return f"curl {option} {value} writes a file"
        if option in ("-O", "--remote-name", "--remote-name-all", "-J", "--remote-header-name", "--output-dir"):
            return f"curl {option} writes a file"
        if option in ("-H", "--header") and value and re.search(r"(?i)method-override|x-http-method", value):
            return "curl: a method-override header is not a GET/HEAD request"
        if option == "--url" and value is not None:
            urls.append(value)
    for url in urls:
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
        if scheme and scheme.group(1).lower() not in ("http", "https"):
            return f"curl {scheme.group(1)}:// is not an HTTP GET/HEAD request"
    return None


def _ufw(name: str, args: list[str]) -> str | None:
    o = _scan(args)
    if any(opt not in ("--version", "--help", "-h") for opt, _ in o.opts):
        return f"ufw {o.opts[0][0]} is not understood"
    if not o.positional:
        return None if o.opts else "ufw without a sub-command is not understood"
    verb = o.positional[0]
    if verb in ("status", "show", "version"):
        return None
    if verb == "app" and len(o.positional) > 1 and o.positional[1] in ("list", "info"):
        return None
    return f"`ufw {' '.join(o.positional[:2])}` is not read-only (only status/show/app list/app info)"


def _iptables(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="t", long_arg=frozenset({"--table"}))
    reads = False
    for option, _ in o.opts:
        if option in ("-S", "-L", "--list", "--list-rules", "--version", "-V", "-h", "--help"):
            reads = True
        elif option not in ("-n", "--numeric", "-v", "--verbose", "-x", "--exact", "--line-numbers", "-t",
                            "--table", "-w", "--wait"):
            return f"{name} {option} changes the rules or is not understood"
    return None if reads else f"{name} without -S/-L is not read-only"


def _iptables_save(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="ftM", long_arg=frozenset({"--file", "--table", "--modprobe"}))
    if o.has("-f") or o.long("--file"):
        return f"{name} -f writes a file"
    return None


def _nft(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="fIDo", long_arg=frozenset({"--file", "--includepath", "--define", "--optimize"}))
    if o.has("-f", "-i", "-o") or o.long("--file", "--interactive", "--optimize"):
        return "nft -f/-i applies rules"
    if not o.positional:
        return None if o.has("-v", "-V", "--version", "-h", "--help") else "nft without `list` is not understood"
    return None if o.positional[0] == "list" else f"`nft {o.positional[0]}` is not read-only (only `nft list`)"


def _mount(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="t", long_arg=frozenset({"--types"}))
    if o.positional or any(opt not in ("-l", "--show-labels", "-t", "--types", "-v") for opt, _ in o.opts):
        return "mount with a device or mount point changes the mounts (only `mount` and `mount -l` list them)"
    return None


def _ss(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="fADFN", long_arg=frozenset({"--family", "--query", "--diag", "--filter", "--net"}))
    if o.has("-K", "-D") or o.long("--kill", "--diag"):
        return "ss -K kills sockets and -D writes a file"
    return None


_IP_OBJECTS = ("address", "route", "link", "neighbour", "neighbor", "rule", "maddress", "netconf", "monitor")


def _ip(name: str, args: list[str]) -> str | None:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        option = args[i].lstrip("-")
        if option in ("b", "batch", "force"):
            return "ip -batch runs the commands of a file"
        i += 2 if option in ("n", "netns", "f", "family", "l", "loops", "rc", "rcvbuf") else 1
    if i >= len(args):
        return "ip without an object is not understood"
    obj = args[i]
    full = next((o for o in _IP_OBJECTS if o.startswith(obj)), None) if obj else None
    if full is None or full == "monitor":
        return f"`ip {obj}` is not understood"
    verb = args[i + 1] if i + 1 < len(args) else "show"
    if verb in ("show", "list", "lst", "sh", "ls", "s", "l") or (full == "route" and verb == "get"):
        return None
    return f"`ip {full} {verb}` is not read-only (only show/list)"


def _date(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="dfrs", optional_arg="I", long_arg=frozenset({"--date", "--file", "--reference",
                                                                            "--set"}))
    if o.has("-s") or o.long("--set"):
        return "date -s sets the clock"
    if any(not p.startswith("+") for p in o.positional):
        return "date with a time argument sets the clock"
    return None


def _hostname(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="F", long_arg=frozenset({"--file"}))
    if o.has("-F", "-b") or o.long("--file", "--boot") or o.positional:
        return "hostname with a name or -F/-b sets the host name"
    return None


def _sysctl(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="r", long_arg=frozenset({"--pattern"}))
    if o.has("-w", "-p", "-f") or o.long("--write", "--load", "--system") or any("=" in p for p in o.positional):
        return "sysctl -w/-p/--system or NAME=VALUE sets kernel parameters"
    return None


def _spacetime(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="s", long_arg=frozenset({"--root-dir", "--config-path", "--server"}))
    pos = o.positional
    if not pos:
        return None if o.has("--version", "-V", "--help", "-h") else "spacetime without a sub-command"
    if pos in (["list"], ["version", "list"], ["server", "list"]):
        return None
    if pos[0] != "sql":
        shown = " ".join(pos[:2]) if pos[0] in ("version", "server") else pos[0]
        return f"`spacetime {shown}` is not read-only (only sql SELECT, list, version list, server list)"
    if o.has("-i") or o.long("--interactive"):
        return "spacetime sql --interactive is not understood"
    if len(pos) != 3:
        return "spacetime sql needs a database and one SELECT statement"
    query = pos[2]
    if not re.match(r"(?is)\s*select\b", query) or ";" in query:
        return "spacetime sql: only one SELECT statement is read-only"
    return None


_DPKG_READ = {"-l", "--list", "-s", "--status", "-L", "--listfiles", "-S", "--search", "-p", "--print-avail",
              "--print-architecture", "--print-foreign-architectures", "--version", "--get-selections", "-C",
              "--audit", "-V", "--verify", "--compare-versions", "--help", "-h", "--no-pager"}


def _dpkg(name: str, args: list[str]) -> str | None:
    o = _scan(args)
    if not o.opts:
        return "dpkg without a query option is not understood"
    for option, _ in o.opts:
        if option not in _DPKG_READ:
            return f"dpkg {option} is not a query"
    return None


_APT_CACHE_READ = {"policy", "show", "showpkg", "showsrc", "search", "madison", "depends", "rdepends", "pkgnames",
                   "stats", "unmet"}


def _apt_cache(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="oct", long_arg=frozenset({"--option", "--config-file", "--target-release"}))
    if o.has("-o", "-c") or o.long("--option", "--config-file"):
        return "apt-cache -o/-c is not understood"
    if not o.positional:
        return None if o.has("--version", "-v", "-h", "--help") else "apt-cache without a sub-command"
    if o.positional[0] not in _APT_CACHE_READ:
        return f"`apt-cache {o.positional[0]}` is not read-only"
    return None


def _file(name: str, args: list[str]) -> str | None:
    o = _scan(args, short_arg="mfeFP", long_arg=frozenset({"--magic-file", "--files-from", "--exclude",
                                                           "--separator", "--parameter"}))
    if o.has("-C") or o.long("--compile"):
        return "file -C writes a compiled magic file"
    return None


def _python(name: str, args: list[str]) -> str | None:
    if args in (["--version"], ["-V"]):
        return None
    return f"{name} runs a program (only `{name} --version` is read-only)"


_CHECKERS: dict[str, Checker] = {
    "sed": _strict(_sed), "awk": _strict(_awk), "gawk": _strict(_awk), "mawk": _strict(_awk),
    "sort": _strict(_sort), "uniq": _strict(_uniq), "find": _strict(_find), "xargs": _xargs, "env": _env,
    "timeout": _timeout, "sudo": _sudo, "printf": _printf, "read": _read, "command": _command, "test": _test,
    "[": _test,
    ".": _source, "source": _source, "export": _export, "systemctl": _strict(_systemctl),
    "journalctl": _strict(_journalctl), "systemd-analyze": _strict(_systemd_analyze), "nginx": _strict(_nginx),
    "certbot": _strict(_certbot), "openssl": _strict(_openssl), "curl": _strict(_curl), "ufw": _strict(_ufw),
    "iptables": _strict(_iptables), "ip6tables": _strict(_iptables), "iptables-save": _strict(_iptables_save),
    "ip6tables-save": _strict(_iptables_save), "nft": _strict(_nft), "mount": _strict(_mount), "ss": _strict(_ss),
    "ip": _strict(_ip), "date": _strict(_date), "hostname": _strict(_hostname), "sysctl": _strict(_sysctl),
    "spacetime": _strict(_spacetime), "dpkg": _strict(_dpkg), "apt-cache": _strict(_apt_cache),
    "file": _strict(_file), "python3": _strict(_python), "python": _strict(_python),
}
