"""stdb-conformance harness: runbook -> plan -> lab -> suites -> reports."""

__version__ = "0.1.0"
