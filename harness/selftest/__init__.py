"""`stdb-conformance selftest`: the kit's mutation self-test.

A catalogue (catalogue.toml, data) names baselines ("configs": a reference runbook, a profile, suites) and
mutants of them (a runbook text edit, host state changed after the apply phase, or a test-only environment
variable), each with the checks it must turn red. Mutants that cannot disturb each other share one lab run
(groups.py); the runs are ordinary `python -m harness run` processes (runner.py) that record reports; the
judge (score.py) reads only those recorded reports and gives the detection score.
"""
