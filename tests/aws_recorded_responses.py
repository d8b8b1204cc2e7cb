"""pytest plugin for running the aws_backup suite in tests against an account moto only partly simulates.

The AWS Backup operations moto does not implement (backup selections, recovery points by resource, restore
testing plans) answer from recorded responses (STDBC_TEST_AWS_RESPONSES: a JSON file `{operation: response}`),
served through botocore's Stubber, which checks each response against the service's own model; every other call
goes to the moto server as before. A timestamp written as `{"hours_ago": H}` becomes that instant (so no test
hard-codes today's date). Loaded with `-p tests.aws_recorded_responses`; never part of the kit.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ENV = "STDBC_TEST_AWS_RESPONSES"


def _instants(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"hours_ago"}:
            return datetime.now(UTC) - timedelta(hours=float(value["hours_ago"]))
        return {k: _instants(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_instants(v) for v in value]
    return value


class _Recorded:
    """A client whose `responses` operations answer from the recordings; the rest go to `real`."""

    def __init__(self, real: Any, service: str, responses: dict[str, Any]) -> None:
        import boto3
        from botocore.stub import Stubber

        self._real = real
        self._responses = responses
        self._stubbed = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                      region_name="us-east-1").client(service)
        self._stubber = Stubber(self._stubbed)
        self._stubber.activate()

    def __getattr__(self, name: str) -> Any:
        if name not in self._responses:
            return getattr(self._real, name)

        def call(**kwargs: Any) -> Any:
            self._stubber.add_response(name, _instants(self._responses[name]))
            return getattr(self._stubbed, name)(**kwargs)

        return call


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    recorded: dict[str, dict[str, Any]] = json.loads(Path(path).read_text())
    for module in {id(item.module): item.module for item in items if getattr(item, "module", None)}.values():
        real_client = getattr(module, "_client", None)
        if real_client is None:
            continue

        def patched(aws: dict[str, Any], service: str, _real: Any = real_client) -> Any:
            client = _real(aws, service)
            return _Recorded(client, service, recorded[service]) if service in recorded else client

        module._client = patched
