"""Stdlib-only scripts the kit runs inside lab hosts with their own python3 (no package installs)."""
