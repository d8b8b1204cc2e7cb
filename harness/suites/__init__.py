"""The conformance suites: one pytest module per promise of the runbook, run by `stdb-conformance run`."""
