"""An in-process sidecar in front of fake LLM providers, for the official async SDKs.

The sidecar is the real ASGI app on Hypercorn (tests/support/servers.py);
the providers speak the real wire formats (tests/llm/providers.py), each on
a loopback address of its own (127.0.0.2, .3, ...) so a secret matched by
host reaches only its own. The SDKs under test are `openai.AsyncOpenAI` and
`anthropic.AsyncAnthropic`, unmodified but for their base URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from sidecar.app import Sidecar
from sidecar.llm.budgets import BUDGETS_KIND, encode_limit
from sidecar.llm.prices import parse_price_overrides
from sidecar.routing import routes
from sidecar.security.egress import EgressPolicy
from tests.conftest import make_settings
from tests.llm.providers import AnthropicProvider, OpenAIProvider, serving
from tests.support.servers import serving as serving_sidecar

#: Test prices, USD per million tokens, so every cost below is known exactly.
PRICES = {
    "openai/gpt-test": {"input": 2.5, "output": 10, "cache_read": 1.25},
    "anthropic/claude-test": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75},
    # Input free: a call's reservation (max_tokens at the output price) is
    # exactly its real cost when max_tokens is what the fake answers with.
    "openai/gpt-budget": {"input": 0, "output": 10, "cache_read": 0},
}


@dataclass
class Gateway:
    """The sidecar under test and the providers behind it."""

    url: str
    app: Sidecar
    openai: OpenAIProvider
    openai_backup: OpenAIProvider
    anthropic: AnthropicProvider
    anthropic_backup: AnthropicProvider

    async def routes(self, toml: str) -> None:
        """Store the routes of `toml` (as `mirapi routes import` would) and load them."""
        for route in routes.routes_from_toml(toml):
            await self.app.store.record_put("routes", route.name, routes.encode(route), True)
        await self.app.routes.refresh()

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(timeout=20)


def llm_sidecar(tmp_path: Path, **settings: object) -> Sidecar:
    """A sidecar with the test prices, loopback upstreams allowed."""
    values = make_settings(tmp_path, llm=parse_price_overrides(PRICES), **settings)
    return Sidecar(values, egress=EgressPolicy(allow_private=True))


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    app = llm_sidecar(tmp_path)
    async with (
        serving(OpenAIProvider(), "127.0.0.2") as openai,
        serving(OpenAIProvider(), "127.0.0.3") as openai_backup,
        serving(AnthropicProvider(), "127.0.0.4") as anthropic,
        serving(AnthropicProvider(), "127.0.0.5") as anthropic_backup,
        serving_sidecar(app) as url,
    ):
        yield Gateway(url, app, openai, openai_backup, anthropic, anthropic_backup)  # type: ignore[arg-type]


async def set_budget(app: Sidecar, scope: str, limit_nano: int) -> None:
    """Set a budget as `mirapi llm budget set` does, and wait until `app` knows of it."""
    await app.store.set_budget(scope, limit_nano)
    await app.store.record_put(BUDGETS_KIND, scope, encode_limit(limit_nano), True)
    await knows_budget(app, scope)


async def knows_budget(app: Sidecar, scope: str) -> None:
    """Wait until `app` has loaded `scope`'s budget (its record table polls every 0.5 s)."""
    for _ in range(250):
        if scope in app.llm.budgeted_scopes():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the sidecar never loaded the budget of {scope}")
