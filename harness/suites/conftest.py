"""Fixtures shared by the suites: `host`, testinfra's view of the run's target.

The suites run with `--rootdir harness/suites -c /dev/null` (harness/run.py), so this conftest (next to them, in
the package) is always loaded, whatever the current directory holds. `host` overrides pytest-testinfra's own
`host` fixture (which would open its own connections, bypassing the kit's guards and transcript).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from testinfra.host import Host

from harness.targets.base import Target
from harness.targets.testinfra_bridge import bridge_of, host_for


@pytest.fixture(scope="session")
def kit_host(target: Target) -> Any:
    """One testinfra Host per suite session: one kit connection, and testinfra's caches (system info, the
    implementation picked for each module) kept across the checks. Built on the target, never on a backend's
    own Host, so that every query is the target's `run` (harness.tape records and replays exactly that)."""
    host = host_for(target)  # through the target's `run`: guarded, in the transcript, on the run's tape
    bridge_of(host)  # a Host whose queries bypass the kit is refused here, not used unrecorded
    return host


@pytest.fixture
def host(kit_host: Host, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's Host with the current check's recorder attached while the test runs: every testinfra
    query of the test is evidence of its check. A test without a check marker records nothing."""
    recorder = request.getfixturevalue("check") if request.node.get_closest_marker("check") else None
    with bridge_of(kit_host).recording(recorder):
        yield kit_host
