"""Bodies are arbitrary JSON (a client's request, an upstream's answer): translating
one either works or raises Untranslatable, never anything else (a stray TypeError
would be a sidecar 500)."""

from __future__ import annotations

import copy
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.llm import translate
from sidecar.llm.translate import Untranslatable
from tests.sidecar.llm.translate.wire import load

EXAMPLES = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def mutated(body: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The fixture with one value somewhere inside replaced by arbitrary JSON."""
    out = copy.deepcopy(body)
    node: Any = out
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return out
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            node = child
            continue
        node[key] = data.draw(JSON)
        return out


def translates_or_refuses(translate: Any, body: dict[str, Any]) -> None:
    try:
        translate(body)
    except Untranslatable:
        pass


@EXAMPLES
@given(st.data())
def test_any_openai_request_translates_or_is_refused(data: st.DataObject) -> None:
    body = mutated(load("openai_request_tool_conversation.json"), data)
    translates_or_refuses(
        lambda b: translate.request_to_anthropic(b, model="m", default_max_tokens=1), body
    )


@EXAMPLES
@given(st.data())
def test_any_anthropic_request_translates_or_is_refused(data: st.DataObject) -> None:
    body = mutated(load("anthropic_request_tool_conversation.json"), data)
    translates_or_refuses(lambda b: translate.request_to_openai(b, model="m"), body)


@EXAMPLES
@given(st.lists(st.dictionaries(st.text(max_size=8), JSON, max_size=4), max_size=6))
def test_stream_translators_survive_arbitrary_chunks(chunks: list[dict[str, Any]]) -> None:
    to_anthropic = translate.StreamToAnthropic("m", "id")
    to_openai = translate.StreamToOpenAI("m", "id", True)
    kinds = ["message_start", "content_block_start", "content_block_delta", "message_delta"]
    for number, chunk in enumerate(chunks):
        to_anthropic.feed(chunk)
        to_openai.feed(kinds[number % len(kinds)], chunk)
    to_anthropic.finish()
    to_openai.feed("message_stop", {})


@EXAMPLES
@given(st.data())
def test_any_anthropic_answer_translates_or_is_refused(data: st.DataObject) -> None:
    body = mutated(load("anthropic_message_tool_use.json"), data)
    translates_or_refuses(translate.response_to_openai, body)


@EXAMPLES
@given(st.data())
def test_any_openai_answer_translates_or_is_refused(data: st.DataObject) -> None:
    body = mutated(load("openai_completion_tool_calls.json"), data)
    translates_or_refuses(translate.response_to_anthropic, body)


@EXAMPLES
@given(st.integers(100, 599), st.dictionaries(st.text(max_size=8), JSON, max_size=4))
def test_any_error_body_translates(status: int, body: dict[str, Any]) -> None:
    assert translate.error_to_openai(status, body)["error"]["message"]
    assert translate.error_to_anthropic(status, {"error": body})["error"]["type"]
