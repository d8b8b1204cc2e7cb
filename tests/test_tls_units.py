"""Units of the tls suite that need no lab."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from harness.planner import build_plan


class _Check:
    def __init__(self) -> None:
        self.not_applicable_reason = ""

    def ref(self, *_: Any) -> None:
        pass

    def not_applicable(self, reason: str) -> None:
        self.not_applicable_reason = reason
        raise AssertionError(f"said not-applicable: {reason}")


def test_a_missing_sslyze_is_the_kits_error_not_a_limit_of_the_backend(monkeypatch: pytest.MonkeyPatch,
                                                                      runbook_path: Path) -> None:
    """Issue 17: without sslyze, tls.mozilla-intermediate said not-applicable; it is the kit's own missing
    dependency, so the check is undecided (an error naming how to install it)."""
    from harness.suites import test_tls

    monkeypatch.setitem(sys.modules, "sslyze", None)  # `import sslyze` raises ImportError
    check = _Check()
    with pytest.raises(RuntimeError, match=r"stdb-conformance\[tls\]"):
        test_tls.test_mozilla_intermediate(None, None, None, build_plan(runbook_path, "default"), check)
    assert not check.not_applicable_reason
