"""Root conftest: suites use the conformance plugin (checks, evidence, lab fixtures)."""

pytest_plugins = ["harness.pytest_plugin"]
