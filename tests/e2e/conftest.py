"""Fixtures for the end-to-end tests: real processes, loopback only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for talking to sidecar processes."""
    async with httpx.AsyncClient(timeout=20) as client:
        yield client
