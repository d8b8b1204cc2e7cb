"""Errors the kit reports to operators as one line, with the exit code CI acts on."""

from __future__ import annotations

# Exit codes (documented in README): 0 pass, 1 conformance failure, 2 usage/config error,
# 3 lab error (could not bring the lab up), 4 incomplete (required checks undecided).
EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_LAB = 3
EXIT_INCOMPLETE = 4
EXIT_HOST_CHANGED = 5  # a read-only run changed the host it judged
VERDICT_EXIT = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "incomplete": EXIT_INCOMPLETE, "host-changed": EXIT_HOST_CHANGED}


class KitError(Exception):
    """An error with a one-line message for the operator and an exit code.

    The message must say what is wrong and how to fix it; the CLI prints it without a traceback.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split())


class UsageError(KitError):
    """Bad arguments or bad input files (missing runbook, unknown profile...)."""

    exit_code = EXIT_USAGE


class RunbookError(UsageError):
    """The runbook cannot be turned into a plan. Always names file and line."""

    def __init__(self, path: str, line: int, message: str, *, hint: str | None = None) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {message}", hint=hint)


class LabError(KitError):
    """The lab could not be brought up (docker not running, no image, no KVM...)."""

    exit_code = EXIT_LAB
