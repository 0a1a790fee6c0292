"""Usage from the providers' own `usage` objects, in one convention (input includes cache)."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.llm.usage import Usage, model_from_body, usage_from_body, usage_from_object
from tests.sidecar.llm.samples import ANTHROPIC_MESSAGE, OPENAI_COMPLETION


def test_openai_completion_usage() -> None:
    # prompt_tokens already counts the cached tokens (cached_tokens is a part of it).
    assert usage_from_body("openai", OPENAI_COMPLETION) == Usage(1200, 350, 1000, 0)


def test_anthropic_message_usage_adds_its_cache_tokens_to_input() -> None:
    # input_tokens (200) excludes cache reads (3000) and cache writes (1000).
    assert usage_from_body("anthropic", ANTHROPIC_MESSAGE) == Usage(4200, 350, 3000, 1000)


def test_header_value_and_dict() -> None:
    usage = Usage(input=1200, output=350, cache_read=1000, cache_write=0)
    assert usage.header_value() == "input=1200; output=350; cache-read=1000; cache-write=0"
    assert usage.as_dict() == {"input": 1200, "output": 350, "cache_read": 1000, "cache_write": 0}


@pytest.mark.parametrize(
    ("format", "document"),
    [
        ("openai", {}),
        ("openai", {"usage": None}),
        ("openai", {"usage": {"total_tokens": 5}}),
        ("anthropic", {"usage": "lots"}),
        ("anthropic", {"usage": {"service_tier": "standard"}}),
    ],
)
def test_no_usage(format: str, document: dict[str, Any]) -> None:
    assert usage_from_body(format, document) is None  # type: ignore[arg-type]


def test_bad_counts_are_ignored_not_trusted() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": True,
        "prompt_tokens_details": {"cached_tokens": -3},
    }
    assert usage_from_object("openai", usage) == Usage(10, 0, 0, 0)


def test_cached_tokens_never_exceed_input() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 50},
    }
    assert usage_from_object("openai", usage) == Usage(10, 1, 10, 0)


def test_deepseek_cache_hits() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "prompt_cache_hit_tokens": 64,
        "prompt_cache_miss_tokens": 36,
    }
    assert usage_from_object("openai", usage) == Usage(100, 20, 64, 0)


def test_anthropic_null_cache_fields() -> None:
    usage = {
        "input_tokens": 25,
        "output_tokens": 15,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None,
    }
    assert usage_from_object("anthropic", usage) == Usage(25, 15, 0, 0)


def test_model_from_body() -> None:
    assert model_from_body(OPENAI_COMPLETION) == "gpt-4o-2024-08-06"
    assert model_from_body(ANTHROPIC_MESSAGE) == "claude-haiku-4-5-20251001"
    assert model_from_body({"model": ""}) is None
    assert model_from_body({"model": 4}) is None
    assert model_from_body({}) is None
