"""Durations and sizes as users write them: `250ms`, `5s`, `5m`, `6h`, bare milliseconds."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SECONDS_PER_UNIT = {None: 0.001, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_BYTES_PER_UNIT = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(text: str) -> float:
    """Seconds in `text`; a bare number is milliseconds (as SPEC §2.6 says).

    Raises ValueError with a message fit to show the user.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (use 250ms, 5s, 5m, 6h or milliseconds)")
    return float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]


def parse_size(text: str) -> int:
    """Bytes in `text` (`10MiB`, `512kb`, `1048576`). Raises ValueError."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (use bytes or 512KiB, 10MiB, 1GB)")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _BYTES_PER_UNIT[unit]
