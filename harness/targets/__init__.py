"""Targets: one interface over the hosts the runbook is applied to (docker | vm | ssh)."""
