"""Stored routes (SPEC §4) and the sidecar's table of them."""
