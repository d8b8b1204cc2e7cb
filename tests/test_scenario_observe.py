"""harness.scenarios.observe: many probes in one round trip, each with its own status and output."""

from __future__ import annotations

from harness.scenarios import observe
from tests.test_testinfra_bridge import LocalTarget


def test_probes_come_back_one_by_one_in_one_round_trip() -> None:
    target = LocalTarget()
    got = observe(target, {
        "lines": "printf 'a\\nb\\n'",
        "no_newline": "printf 200",  # e.g. curl -w '%{http_code}'
        "fails": "echo oops >&2; exit 3",
        "empty": "true",
    })
    assert len(target.sent) == 1
    assert got["lines"] == {"command": "printf 'a\\nb\\n'", "status": 0, "output": "a\nb"}
    assert (got["no_newline"]["status"], got["no_newline"]["output"]) == (0, "200")
    assert (got["fails"]["status"], got["fails"]["output"]) == (3, "oops")
    assert (got["empty"]["status"], got["empty"]["output"]) == (0, "")


def test_a_round_trip_that_times_out_says_so_for_the_probes_it_did_not_reach() -> None:
    got = observe(LocalTarget(), {"quick": "echo hi", "slow": "sleep 5"}, timeout=1)
    assert got["quick"]["status"] in (0, None)
    assert got["slow"]["status"] is None and got["slow"]["output"].startswith("(no answer")
