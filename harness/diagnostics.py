"""Troubleshooting as diagnostics: when a check fails, run the runbook's own troubleshooting commands that fit
the failure, read-only, on the target, and attach their output to the failed check's evidence.

Which troubleshooting subsection fits is read from its heading's words (service / nginx / certificate...),
not from this runbook's exact titles. A command runs only when every command of its pipeline is a read-only
one; anything that changes the host ("add the executable permission": chmod) is attached as a suggestion
and not run. On a host the kit did not build (ssh without --allow-mutation) the target's gate decides as well:
a command runs there only when it matches the read-only catalogue (harness/backends/ssh_catalogue.py) after
`sudo` is read as the user to run as; the rest is attached as "not run: outside the read-only catalogue".
"""

from __future__ import annotations

import re
import shlex

from harness.model import Plan, Step, StepKind
from harness.results import Evidence
from harness.targets.base import Target
from harness.terminal import in_terminal
from harness.time_ledger import spend

# suite -> words of a troubleshooting heading that make it fit that suite's failures
TOPICS: dict[str, tuple[str, ...]] = {
    "service": ("service", "spacetimedb"),
    "operator": ("service", "spacetimedb", "nginx"),
    "routes": ("nginx", "proxy"),
    "tls": ("certificate", "renewal", "encrypt", "certbot", "ssl", "tls"),
    "mounts": ("service", "spacetimedb", "mount", "volume"),
}
# verbs (after sudo / sudo -u USER) that only read
READ_ONLY = {"journalctl", "ls", "cat", "tail", "head", "grep", "stat", "df", "findmnt", "ss", "ps", "id",
             "systemctl status", "nginx -t", "certbot renew --dry-run", "certbot certificates", "ufw status",
             "lsblk", "blkid"}  # never `mount`: `mount -a` mounts, and `mount` alone is `findmnt`'s job
TIMEOUT = 90.0


def fitting_steps(plan: Plan, suite: str) -> list[Step]:
    words = TOPICS.get(suite, ())
    found = []
    for step in plan.steps:
        if step.phase != "diagnostics" or step.kind is not StepKind.SHELL:
            continue
        heading = (step.ref.section[-1] if step.ref.section else "").lower()
        if any(re.search(rf"\b{re.escape(w)}", heading) for w in words):
            found.append(step)
    return found


def _verb(segment: str) -> str:
    try:
        words = shlex.split(segment)
    except ValueError:
        return ""
    while words and words[0] == "sudo":
        words = words[1:]
        while words and words[0].startswith("-"):
            takes_value = words[0] in ("-u", "-g")
            words = words[2:] if takes_value else words[1:]
    return " ".join(words)


def is_read_only(command: str) -> bool:
    segments = [s for s in re.split(r"\|\|?|&&|;", command) if s.strip()]
    if not segments or re.search(r"[<>]", command.replace("2>&1", "")):
        return False
    for segment in segments:
        verb = _verb(segment)
        if not any(verb == ro or verb.startswith(ro + " ") for ro in READ_ONLY):
            return False
    return True


def gather(plan: Plan, suite: str, target: Target, *, user: str = "ubuntu",
           seen: dict[str, tuple[str, Evidence]] | None = None, check_id: str = "") -> list[Evidence]:
    """Evidence from the fitting troubleshooting steps (run when read-only, else shown as suggestions).

    `seen` (command -> the check it ran for, its evidence): what earlier failed checks of the suite already ran
    while the host has not changed since (the caller empties it when a check that changes the host ran); such a
    command is not run again, its output is shown with the check it was taken for. `check_id` is this check."""
    evidence = []
    for step in fitting_steps(plan, suite):
        where = f"{' > '.join(step.ref.section[-1:])}, line {step.ref.line_start}"
        if seen is not None and step.command in seen:
            first, earlier = seen[step.command]
            evidence.append(Evidence(label=f"{earlier.label} (its output when {first} failed; not run again: no "
                                           f"check has changed the host since)", command=earlier.command,
                                     output=earlier.output, status=earlier.status, host=earlier.host))
            continue
        gate = getattr(target, "refusal", None)  # a host the kit may only read: its gate decides, not our guess
        outside = gate(step.command) if gate is not None else None
        if outside:
            evidence.append(Evidence(label=f"troubleshooting suggestion (not run: outside the read-only catalogue: "
                                           f"{outside}) — {where}",
                                     command=step.command, output="", status=None, host=""))
            continue
        if not is_read_only(step.command):
            evidence.append(Evidence(label=f"troubleshooting suggestion (not run: changes the host) — {where}",
                                     command=step.command, output="", status=None, host=""))
            continue
        with spend("runbook"):  # the runbook's own troubleshooting command, as written
            if not getattr(target, "runs_shell_text", True):
                # the read-only catalogue runs the command's own words (no shell, so no terminal, on such a host)
                res = target.run(step.command, user=user, timeout=TIMEOUT)
            else:
                # in a terminal, as an operator types it (a tty: e.g. `certbot renew` then skips the random sleep
                # it takes when run from cron); harness/terminal.py says why not util-linux's `script`
                res = target.run(in_terminal(step.command), user=user, timeout=TIMEOUT)
        res.command = step.command
        output = res.stdout + (f"\n[stderr]\n{res.stderr}" if res.stderr.strip() else "")
        ran = Evidence(label=f"troubleshooting (runbook's own) — {where}", command=step.command,
                       output=output.strip()[-4000:], status=res.exit_status,
                       host=f"{user}@{getattr(target, 'hostname', '')}")
        evidence.append(ran)
        if seen is not None:
            seen[step.command] = (check_id or "an earlier check", ran)
    return evidence
