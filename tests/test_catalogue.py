"""Every check id used by a suite is listed in docs/checks.md, and the catalogue lists nothing else."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT

CHECK_IN_SUITE = re.compile(r"@pytest\.mark\.check\(\s*\"([a-z0-9_.-]+)\"")
CHECK_IN_DOC = re.compile(r"^\| `([a-z0-9_.-]+)` \|", re.MULTILINE)


def suite_check_ids() -> dict[str, str]:
    ids: dict[str, str] = {}
    for path in sorted((REPO_ROOT / "harness" / "suites").glob("test_*.py")):
        for check_id in CHECK_IN_SUITE.findall(path.read_text()):
            assert check_id not in ids, f"duplicate check id {check_id} in {path.name} and {ids[check_id]}"
            ids[check_id] = path.name
    return ids


def test_suites_define_checks() -> None:
    assert suite_check_ids(), "no checks found in harness/suites/"


def test_catalogue_matches_suites() -> None:
    documented = set(CHECK_IN_DOC.findall((REPO_ROOT / "docs" / "checks.md").read_text()))
    used = suite_check_ids()
    assert sorted(set(used) - documented) == [], "checks missing from docs/checks.md"
    assert sorted(documented - set(used)) == [], "docs/checks.md lists checks no suite has"


def test_check_ids_are_prefixed_by_their_suite() -> None:
    for check_id, filename in suite_check_ids().items():
        suite = filename.removeprefix("test_").removesuffix(".py")
        assert check_id.startswith(suite + "."), f"{check_id} is in {filename}"
