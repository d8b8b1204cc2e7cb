"""An existing host's URL that does not resolve or answer stops the run in one line (before any suite). The
answering case is proven by every ssh run of tests/test_lab_existing_host.py."""

from __future__ import annotations

import socket

import pytest

from harness.errors import LabError
from harness.run import _url_answers


def test_a_name_that_does_not_resolve_is_one_line() -> None:
    with pytest.raises(LabError) as info:
        _url_answers({"domain": "stdb.nonexistent.invalid", "address": "", "url": "https://stdb.nonexistent.invalid"})
    assert "does not resolve" in info.value.one_line() and "--resolve" in info.value.one_line()
    assert "\n" not in info.value.one_line()


def test_an_address_where_nothing_answers_on_443_is_one_line() -> None:
    with socket.socket() as probe:  # the check is only meaningful where 443 is closed on loopback
        if probe.connect_ex(("127.0.0.1", 443)) == 0:
            pytest.skip("something listens on 127.0.0.1:443 here")
    with pytest.raises(LabError) as info:
        _url_answers({"domain": "stdb.example.net", "address": "127.0.0.1", "url": "https://stdb.example.net"})
    assert "does not answer on 127.0.0.1:443" in info.value.one_line()
