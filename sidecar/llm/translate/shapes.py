"""Reading upstream JSON of any shape: a part that is not what the format documents
reads as absent, so an odd answer or event is translated without it, never a crash."""

from __future__ import annotations

from typing import Any


def obj(value: Any) -> dict[str, Any]:
    """The value if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def objs(value: Any) -> list[dict[str, Any]]:
    """The objects in the value if it is a list, else none."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def text(value: Any) -> str:
    """The value if it is a string, else ""."""
    return value if isinstance(value, str) else ""


def index(value: Any) -> int:
    """The value if it is an integer, else 0 (the first)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def count(value: Any) -> int:
    """A token count: the value if it is a positive integer, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
