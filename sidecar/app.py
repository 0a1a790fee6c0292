"""Placeholder: the ASGI application factory (being written)."""
from __future__ import annotations
from typing import Any

def create_app(settings: Any) -> Any:
    raise NotImplementedError
