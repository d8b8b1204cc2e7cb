"""The read-only catalogue: every command the kit may send to a host it did not build, without --allow-mutation.

An entry is a program with the exact option spellings it may carry and the kind of every value and operand
(a unit name, a path from an allowed set, a number, a format from a fixed list). A command is an argv; it
matches an entry when its program (and sub-command) is the entry's and every later word is one of the listed
options, a value of the listed kind, or an operand of the listed kind. Nothing else matches: an abbreviation
(`--prop`), a `--opt=value` spelling the entry does not list, an unknown option, a path outside the allowed set.
The ssh backend sends a matched argv quoted word by word, never through a remote shell (harness/backends/ssh.py);
pipes, `grep`, `tail` and other text processing run on the kit's machine (harness/backends/readonly_script.py).

Secrets are never read: no entry prints a file's content outside READABLE, and READABLE leaves out private
keys, /etc/shadow, the CLI's token and cloud credentials; `sha256sum` may hash them (a hash reveals nothing and
lets the state digest see a rewritten key).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from harness.errors import EXIT_USAGE, KitError


@dataclass(frozen=True)
class Kind:
    """What a value or an operand may be: `check(word)` is None when the word is one, else why not. `sudo` is a
    POSIX extended regular expression for sudoers (harness/backends/sudoers.py) that accepts the same words or
    fewer, never more, and no space unless the value is its command's last word."""

    check: Callable[[str], str | None]
    sudo: str

    def __call__(self, word: str) -> str | None:
        return self.check(word)


class MutationRefused(KitError):
    """A command outside the read-only catalogue on a host the kit did not build, refused before it was sent."""

    exit_code = EXIT_USAGE

    def __init__(self, command: str, reason: str, *, host: str = "") -> None:
        self.command = command
        self.reason = reason
        self.host = host
        shown = " ".join(command.split())
        shown = shown if len(shown) <= 160 else shown[:157] + "..."
        where = f" on {host}" if host else ""
        super().__init__(f"refused to run `{shown}`{where}: {reason}",
                         hint="the host was not changed; a command outside the read-only catalogue needs "
                              "--allow-mutation")


# ---- what may be read ---------------------------------------------------------------------------------------
SECRET = re.compile(r"^/etc/g?shadow-?$|^/etc/ssh/ssh_host_\w+_key$|privkey\d*\.pem$|\.key$|/id_(?:rsa|dsa|ecdsa|"
                    r"ed25519)$|/cli\.toml$|/\.aws/|/\.spacetime/|^/etc/letsencrypt/accounts(?:/|$)|^/proc/[^/]+/"
                    r"environ$|^/etc/sudoers|^/root/|/\.ssh/|/\.config/|/\.netrc$|/\.pgpass$")
# whose content may be printed (a directory entry: everything under it, secrets above excepted)
READABLE = ("/etc/nginx/", "/etc/systemd/system/", "/lib/systemd/system/", "/usr/lib/systemd/system/",
            "/etc/letsencrypt/", "/etc/fstab", "/etc/os-release", "/usr/lib/os-release", "/etc/hostname",
            "/etc/ufw/", "/etc/default/ufw", "/proc/mounts", "/proc/self/mountinfo", "/proc/1/comm",
            "/proc/sys/kernel/random/boot_id", "/proc/uptime", "/proc/loadavg", "/etc/passwd", "/etc/group",
            "/sys/block/")
_SEG = r"([^/ .][^/ ]*|\.[^/ .][^/ ]*)"  # a path segment that is not `.` or `..` (sudoers' regex has no lookahead)
# READABLE for sudoers, narrower for Let's Encrypt (certificates and renewal files, never a key)
_READABLE_SUDO = "(" + "|".join([
    f"/etc/nginx(/{_SEG})*", f"/etc/systemd/system(/{_SEG})*", f"/lib/systemd/system(/{_SEG})*",
    f"/usr/lib/systemd/system(/{_SEG})*",
    r"/etc/letsencrypt/(options-ssl-nginx\.conf|ssl-dhparams\.pem|renewal/[A-Za-z0-9._-]+\.conf|"
    r"(live|archive)/[A-Za-z0-9._-]+/(cert|chain|fullchain)[0-9]*\.pem)",
    "/etc/fstab", r"/etc/os-release", r"/usr/lib/os-release", "/etc/hostname", f"/etc/ufw(/{_SEG})*",
    "/etc/default/ufw", "/proc/mounts", "/proc/self/mountinfo", "/proc/1/comm", "/proc/sys/kernel/random/boot_id",
    "/proc/uptime", "/proc/loadavg", "/etc/passwd", "/etc/group", f"/sys/block(/{_SEG})*"]) + ")"


def _clean_path(word: str) -> str | None:
    if not word.startswith("/"):
        return f"`{word}` is not an absolute path"
    if "\0" in word:
        return "a path with a NUL byte"
    parts = word.split("/")
    if ".." in parts or "." in parts[1:-1] or "//" in word.rstrip("/"):
        return f"`{word}` is not a normalised path (.., . or //)"
    return None


def _readable(word: str) -> str | None:
    reason = _clean_path(word)
    if reason:
        return reason
    if SECRET.search(word):
        return f"`{word}` is a secret (hashes, private keys, tokens, credentials): never read"
    if not any(word == r.rstrip("/") or (r.endswith("/") and word.startswith(r)) for r in READABLE):
        return f"`{word}` is outside the paths a read-only run may read"
    return None


# a path whose names and metadata may be shown, or that is only hashed on the host (a key's hash is not the key)
any_path = Kind(_clean_path, f"(/|(/{_SEG})+/?)")
# a path whose content may be printed: under READABLE, never a secret
readable = Kind(_readable, _READABLE_SUDO)


def _pattern(regex: str, what: str, sudo: str) -> Kind:
    compiled = re.compile(regex)

    def check(word: str) -> str | None:
        return None if compiled.fullmatch(word) else f"`{word}` is not {what}"
    return Kind(check, sudo)


def one_of(*values: str) -> Kind:
    allowed = frozenset(values)

    def check(word: str) -> str | None:
        return None if word in allowed else f"`{word}` is not one of {', '.join(sorted(allowed))}"
    return Kind(check, "(" + "|".join(re.sub(r"([][.()*+?{}|^$\\])", r"\\\1", v) for v in sorted(allowed)) + ")")


UNIT = _pattern(r"[A-Za-z0-9_][A-Za-z0-9@_.:\\-]{0,250}", "a unit name", r"[A-Za-z0-9_][-A-Za-z0-9@_.:]*")
NAME = _pattern(r"[a-z_][a-z0-9_.-]{0,31}", "a user or group name", r"[a-z_][a-z0-9_.-]*")
PROGRAM = _pattern(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}", "a program name", r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
NUMBER = _pattern(r"[0-9]{1,9}", "a number", "[0-9]+")
PROPERTY = _pattern(r"[A-Z][A-Za-z0-9]{0,63}", "a systemd property name", "[A-Z][A-Za-z0-9]*")
COLUMNS = _pattern(r"[A-Za-z0-9_%:-]+(,[A-Za-z0-9_%:-]+)*", "a list of columns",
                   "[A-Za-z0-9_%:-]+(,[A-Za-z0-9_%:-]+)*")
# printed, never read as a path or a program (for sudoers without spaces: it cannot swallow the next word)
FORMAT = _pattern(r"[^\0\n]{0,200}", "an output format", "[^ ]*")
TEXT = _pattern(r"[A-Za-z0-9 ._-]{1,100}", "a name", "[A-Za-z0-9 ._-]+")  # only as its command's last word
LOOPBACK_URL = _pattern(r"https?://(?:127\.0\.0\.1|localhost|\[::1\])(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?",
                        "a URL on this host's loopback",
                        r"https?://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?")
TIME = _pattern(r"[A-Za-z0-9 :.+-]{1,40}", "a time", "[A-Za-z0-9:.+-]+")
DATE_FORMAT = _pattern(r"\+[%A-Za-z:_. -]{1,40}", "a date format", r"\+[%A-Za-z:_.-]+")
MODE = _pattern(r"[-/]?[0-7]{3,4}", "a mode", "[-/]?[0-7]+")
_DB_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_SELECT = re.compile(r"\s*SELECT\s[^;]{1,500}", re.IGNORECASE)


def _sql_operand(word: str) -> str | None:
    if _DB_NAME.fullmatch(word) or _SELECT.fullmatch(word):
        return None
    return f"`{word[:60]}` is neither a database name nor one SELECT"


# a database name, or one SELECT statement (no `;`: nothing after it)
SQL_OPERAND = Kind(_sql_operand, "([a-z0-9][a-z0-9-]*|[Ss][Ee][Ll][Ee][Cc][Tt] [^;]*)")


@dataclass(frozen=True)
class Entry:
    """One program (and sub-command) with the exact options it may carry and its operands' kinds."""

    name: str
    words: tuple[str, ...]  # the program and its sub-command, e.g. ("systemctl", "show")
    flags: frozenset[str] = frozenset()  # options without a value, exact spellings
    valued: Mapping[str, Kind] = field(default_factory=dict)  # option -> its value's kind (the next word)
    operand: Kind | None = None  # every operand's kind; None: no operand
    min_operands: int = 0
    max_operands: int = 64
    root: bool = True  # needs root (it goes into the audit user's sudoers drop-in)
    why: str = ""

    def refusal(self, argv: list[str]) -> str | None:
        rest = argv[len(self.words):]
        operands: list[str] = []
        i = 0
        options_done = False
        while i < len(rest):
            word = rest[i]
            if not options_done and word == "--" and self.operand is not None:
                options_done = True
            elif not options_done and word.startswith("-") and word != "-":
                if word in self.flags:
                    pass
                elif word in self.valued:
                    if i + 1 >= len(rest):
                        return f"`{word}` needs a value"
                    reason = self.valued[word](rest[i + 1])
                    if reason:
                        return f"{word}: {reason}"
                    i += 1
                else:
                    return f"`{word}` is not an option `{' '.join(self.words)}` may carry in the read-only catalogue"
            else:
                if self.operand is None:
                    return f"`{' '.join(self.words)}` takes no operand here (`{word}`)"
                reason = self.operand(word)
                if reason:
                    return reason
                operands.append(word)
            i += 1
        if not self.min_operands <= len(operands) <= self.max_operands:
            return f"`{' '.join(self.words)}` takes {self.min_operands}-{self.max_operands} operands here"
        return None


def _e(name: str, words: str, flags: str = "", valued: Mapping[str, Kind] | None = None, operand: Kind | None = None,
       min_operands: int = 0, max_operands: int = 64, *, root: bool = True, why: str = "") -> Entry:
    return Entry(name, tuple(words.split()), frozenset(flags.split()), dict(valued or {}), operand, min_operands,
                 max_operands, root, why)


_FIND = "find"  # matched by its own grammar below: roots, then a fixed set of tests and actions

CATALOGUE: tuple[Entry, ...] = (
    # systemd
    _e("unit properties", "systemctl show", "--value --all --no-pager", {"-p": PROPERTY, "--property": PROPERTY},
       UNIT, 1),
    _e("unit active", "systemctl is-active", "--quiet", operand=UNIT, min_operands=1),
    _e("unit enabled", "systemctl is-enabled", "--quiet", operand=UNIT, min_operands=1),
    _e("unit failed", "systemctl is-failed", "--quiet", operand=UNIT, min_operands=1),
    _e("unit status", "systemctl status", "--no-pager -l --full", {"-n": NUMBER, "--lines": NUMBER}, UNIT, 1),
    _e("unit file", "systemctl cat", "--no-pager", operand=UNIT, min_operands=1),
    _e("system state", "systemctl is-system-running"),
    _e("systemd version", "systemctl --version", root=False),
    _e("python version", "python3 --version", root=False),
    _e("timers", "systemctl list-timers", "--all --no-pager"),
    _e("unit files", "systemctl list-unit-files", "--no-pager --no-legend --type=timer --type=service"),
    _e("journal", "journalctl", "--no-pager -q -b -r --utc -x", {"-u": UNIT, "--unit": UNIT, "-n": NUMBER,
                                                                   "--lines": NUMBER, "--since": TIME,
                                                                   "-o": one_of("cat", "short", "short-iso",
                                                                                "short-precise")}),
    _e("nginx syntax check", "nginx", "-t -T -q -v -V", why="reads the configuration; writes nothing"),
    # files and processes
    _e("file content", "cat", operand=readable, min_operands=1, max_operands=1),
    _e("listing", "ls", "-l -a -la -al -lah -lha -lh -ld -1 -n -ln -lan -lahn -R -lR -laR --full-time",
       operand=any_path),  # names and metadata, never content
    _e("file metadata", "stat", "-L", {"-c": FORMAT, "-Lc": FORMAT, "--format": FORMAT, "--printf": FORMAT},
       any_path, 1),
    _e("file test", "test", "-e -L -h -d -f -r -s -x -b", operand=any_path, min_operands=1, max_operands=1),
    _e("real path", "realpath", "-e -m", operand=any_path, min_operands=1),
    _e("link target", "readlink", "-f -e -n", operand=any_path, min_operands=1),
    _e("hash on the host", "sha256sum", "-z -b --tag", operand=any_path, min_operands=1, max_operands=400),
    _e("processes", "ps", "-A -e -ww -Aww -eww -f -ef -eo", {"-o": COLUMNS, "-p": NUMBER, "-u": NAME}),
    _e("kernel", "uname", "-s -m -r -a -n"),
    _e("program location", "which", operand=PROGRAM, min_operands=1, root=False),
    _e("users and groups", "getent", operand=one_of("passwd", "group", "hosts"), min_operands=1, max_operands=1),
    _e("user", "getent passwd", operand=NAME, min_operands=1, max_operands=1),
    _e("group", "getent group", operand=NAME, min_operands=1, max_operands=1),
    _e("identity", "id", "-u -un -g -gn -G -Gn", operand=NAME, max_operands=1, root=False),
    _e("sudo works", "true", why="nothing: proves `sudo -n` works"),
    _e("clock", "date", "-u -Is --iso-8601=seconds", operand=DATE_FORMAT,
       max_operands=1, root=False),
    _e("packages", "dpkg-query", "-W -l", {"-f": FORMAT, "--showformat": FORMAT}, PROGRAM),
    # storage
    _e("mounts", "findmnt", "-n -r -rn -l -J --fstab --verify --verbose --real", {
        "-o": COLUMNS, "--output": COLUMNS, "--mountpoint": any_path, "-M": any_path, "--target": any_path,
        "-T": any_path}),
    _e("block devices", "lsblk", "-d -n -p -b -J -r -f -dn -dno", {"-o": COLUMNS, "--output": COLUMNS}, any_path),
    _e("block ids", "blkid", "", {"-s": COLUMNS, "-o": one_of("value", "export", "full"),
                                  "-c": one_of("/dev/null")}, any_path),
    # network
    _e("listening sockets", "ss", "--numeric --listening --tcp --udp --processes -l -n -t -u -p -ltn -ltnp -tlnp "
       "-lntp -tln -lnt -ulnp -H -Hltn"),
    _e("packet filter (iptables)", "iptables", "-S -n -v --line-numbers", {"-L": one_of("INPUT", "OUTPUT", "FORWARD"),
                                                                            "-t": one_of("filter", "nat")}),
    _e("packet filter (ip6tables)", "ip6tables", "-S -n -v --line-numbers", {"-t": one_of("filter", "nat")}),
    _e("packet filter (nft)", "nft", "", operand=one_of("list", "ruleset"), min_operands=2, max_operands=2),
    _e("firewall", "ufw status", "", operand=one_of("verbose", "numbered"), max_operands=1),
    _e("firewall rules added", "ufw show added"),
    _e("firewall application", "ufw app info", operand=TEXT, min_operands=1, max_operands=1),
    _e("http on loopback", "curl", "-s -S -sS -f -k -i -I --http1.1",
       {"-o": one_of("/dev/null"), "-w": FORMAT, "--max-time": NUMBER, "-m": NUMBER}, LOOPBACK_URL, 1, 1),
    # the SpacetimeDB CLI of the install, as the service user: a query, never a publish, call or delete
    _e("read-only SQL", "spacetime --root-dir=/stdb sql", "", {"-s": one_of("local")}, SQL_OPERAND, 2, 2,
       root=False, why="a SELECT through the host's own CLI"),
    # certificates (public halves only)
    _e("certificate", "openssl x509", "-noout -subject -issuer -dates -enddate -startdate -serial -fingerprint "
       "-sha256 -text", {"-in": readable, "-ext": COLUMNS, "-checkend": NUMBER}),
)

# `find` is matched by a grammar of its own: root paths, then these words only (no -exec, -delete, -fprint...)
FIND_FLAGS = frozenset({"-xdev", "!", "(", ")", "-o", "-a", "-prune", "-print", "-print0", "-ls"})
FIND_VALUED: Mapping[str, Kind] = {"-user": NAME, "-group": NAME, "-type": one_of(*"fdlbcps"), "-maxdepth": NUMBER,
                                   "-mindepth": NUMBER, "-name": FORMAT, "-path": FORMAT, "-printf": FORMAT,
                                   "-perm": MODE, "-newer": any_path}


def _find_refusal(argv: list[str]) -> str | None:
    i = 1
    roots = 0
    while i < len(argv) and not argv[i].startswith("-") and argv[i] not in ("!", "(", ")"):
        reason = any_path(argv[i])  # names and metadata only: find has no action here that prints content
        if reason:
            return reason
        roots += 1
        i += 1
    if roots == 0:
        return "`find` needs a root path"
    while i < len(argv):
        word = argv[i]
        if word in FIND_VALUED:
            if i + 1 >= len(argv):
                return f"`{word}` needs a value"
            reason = FIND_VALUED[word](argv[i + 1])
            if reason:
                return f"{word}: {reason}"
            i += 2
            continue
        if word not in FIND_FLAGS:
            return f"`{word}` is not a `find` expression the read-only catalogue allows"
        i += 1
    return None


_PROGRAM_DIRS = ("/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/")
SPACETIME_CLI = ("/stdb/spacetime", "/usr/local/bin/spacetime")  # where the runbook's installer puts the CLI


def program_of(word: str) -> str:
    """`/usr/bin/ss` is `ss` (testinfra names programs by path); the install's CLI is `spacetime`; any other path
    is itself."""
    if word in SPACETIME_CLI:
        return "spacetime"
    for folder in _PROGRAM_DIRS:
        if word.startswith(folder) and "/" not in word[len(folder):]:
            return word[len(folder):]
    return word


def match(argv: list[str]) -> Entry | str:
    """The entry `argv` matches, or a one-line reason it matches none (and must not be sent)."""
    if not argv:
        return "an empty command"
    words = [program_of(argv[0]), *argv[1:]]
    if words[0] == _FIND:
        reason = _find_refusal(words)
        return reason or Entry("find", ("find",), why="lists names and metadata")
    candidates = [e for e in CATALOGUE if tuple(words[:len(e.words)]) == e.words]
    if not candidates:
        known = sorted({e.words[0] for e in CATALOGUE} | {_FIND})
        if words[0] in known:
            return f"`{' '.join(words[:2])}` is not in the read-only catalogue"
        return f"`{words[0]}` is not a program of the read-only catalogue"
    # the most specific entry first (`getent passwd NAME` before `getent DATABASE`)
    reasons = []
    for entry in sorted(candidates, key=lambda e: -len(e.words)):
        reason = entry.refusal(words)
        if reason is None:
            return entry
        reasons.append(reason)
    return reasons[0]


def refusal(argv: list[str]) -> str | None:
    found = match(argv)
    return found if isinstance(found, str) else None


# environment a command may be given on such a host: none of it can load code or move the program
ALLOWED_ENV = {"LC_ALL": {"C", "C.UTF-8"}, "LANG": {"C", "C.UTF-8"}, "SYSTEMD_COLORS": {"0", "false"},
               "SYSTEMD_PAGER": {"", "cat"}, "TZ": {"UTC"}}


def env_refusal(env: Mapping[str, str] | None) -> str | None:
    for name, value in (env or {}).items():
        if value not in ALLOWED_ENV.get(name, set()):
            return f"the environment variable {name}={value!r} is outside the read-only catalogue"
    return None
