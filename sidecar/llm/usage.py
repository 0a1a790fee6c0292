"""Token usage, read from the provider's own `usage` object (SPEC §10, "Usage and cost").

One convention for both formats, OpenAI's: `input` counts every input token,
cached ones included. OpenAI's `prompt_tokens` already does (its
`prompt_tokens_details.cached_tokens` is a part of it); Anthropic's
`input_tokens` does not (`cache_read_input_tokens` and
`cache_creation_input_tokens` come on top), so they are added. Getting this
wrong either bills cached tokens twice or not at all, the cost bug LiteLLM
had repeatedly for Anthropic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.llm.formats import Format


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call; `input` includes `cache_read` and `cache_write`."""

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0

    def header_value(self) -> str:
        """The `X-LLM-Usage` value: `input=1200; output=350; cache-read=1000; cache-write=0`."""
        return (
            f"input={self.input}; output={self.output}; "
            f"cache-read={self.cache_read}; cache-write={self.cache_write}"
        )

    def as_dict(self) -> dict[str, int]:
        """The figures by name, as events, spend and the stream's closing comment show them."""
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
        }


def usage_from_body(format: Format, document: Mapping[str, Any]) -> Usage | None:
    """The usage of a JSON answer (`chat.completion` or `message`); None when it has none."""
    usage = document.get("usage")
    if not isinstance(usage, Mapping):
        return None
    return usage_from_object(format, usage)


def usage_from_object(format: Format, usage: Mapping[str, Any]) -> Usage | None:
    """A Usage from the format's `usage` object itself; None when it holds no token count.

    OpenAI: `prompt_tokens`, `completion_tokens`,
    `prompt_tokens_details.cached_tokens` (DeepSeek's OpenAI-compatible
    `prompt_cache_hit_tokens` when that is absent). Anthropic: `input_tokens`
    + `cache_read_input_tokens` + `cache_creation_input_tokens`,
    `output_tokens`.
    """
    if format == "openai":
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
        if prompt is None and completion is None:
            return None
        details = usage.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else None
        if cached is None:
            cached = _count(usage.get("prompt_cache_hit_tokens"))
        input_tokens = prompt or 0
        return Usage(
            input=input_tokens,
            output=completion or 0,
            cache_read=min(cached or 0, input_tokens),
        )
    uncached = _count(usage.get("input_tokens"))
    output = _count(usage.get("output_tokens"))
    if uncached is None and output is None:
        return None
    cache_read = _count(usage.get("cache_read_input_tokens")) or 0
    cache_write = _count(usage.get("cache_creation_input_tokens")) or 0
    return Usage(
        input=(uncached or 0) + cache_read + cache_write,
        output=output or 0,
        cache_read=cache_read,
        cache_write=cache_write,
    )


def model_from_body(document: Mapping[str, Any]) -> str | None:
    """The model that answered, as the answer names it (both formats have a top-level `model`)."""
    model = document.get("model")
    return model if isinstance(model, str) and model else None


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
