"""Which calls are LLM calls, what their bodies ask for, and the two edits the sidecar makes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.llm.formats import (
    LlmRequest,
    call_format,
    parse_request,
    with_max_tokens,
    with_stream_usage,
)
from tests.sidecar.llm.samples import ANTHROPIC_REQUEST, OPENAI_REQUEST


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/chat/completions", "openai"),
        ("post", "/openai/v1/chat/completions", "openai"),
        ("POST", "/v1/chat/completions/", "openai"),
        ("POST", "/chat/completions?api-version=2024-10-21", "openai"),
        ("POST", "/v1/messages", "anthropic"),
        ("POST", "/r/claude/v1/messages/", "anthropic"),
        ("GET", "/v1/chat/completions", None),
        ("PUT", "/v1/messages", None),
        ("POST", "/v1/messages/count_tokens", None),
        ("POST", "/v1/messages/batches", None),
        ("POST", "/v1/completions", None),
        ("POST", "/v1/embeddings", None),
        ("POST", "/v1/chat/completions//", None),
        ("POST", "/v1/mychat/completions", None),
    ],
)
def test_call_format(method: str, path: str, expected: str | None) -> None:
    assert call_format(method, path) == expected


def test_an_openai_stream_request() -> None:
    assert parse_request("openai", OPENAI_REQUEST) == LlmRequest(
        format="openai",
        model="gpt-4o-mini",
        stream=True,
        max_tokens=256,
        wants_usage=False,
        input_estimate=math.ceil(len(OPENAI_REQUEST) / 4),
    )


def test_an_anthropic_request_always_gets_usage() -> None:
    request = parse_request("anthropic", ANTHROPIC_REQUEST)
    assert request is not None
    assert (request.model, request.stream, request.max_tokens, request.wants_usage) == (
        "claude-haiku-4-5",
        True,
        1024,
        True,
    )


@pytest.mark.parametrize(
    ("body", "max_tokens"),
    [
        ({"max_completion_tokens": 100, "max_tokens": 50}, 100),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": None, "max_tokens": 50}, 50),
        ({"max_tokens": True}, None),
        ({"max_tokens": -1}, None),
        ({"max_tokens": 12.5}, None),
        ({}, None),
    ],
)
def test_openai_max_tokens(body: dict[str, Any], max_tokens: int | None) -> None:
    request = parse_request("openai", json.dumps(body).encode())
    assert request is not None and request.max_tokens == max_tokens


@pytest.mark.parametrize(
    ("options", "wants"),
    [
        ({"include_usage": True}, True),
        ({"include_usage": False}, False),
        ({"include_usage": "true"}, False),
        ({}, False),
        (None, False),
    ],
)
def test_openai_wants_usage(options: object, wants: bool) -> None:
    body = json.dumps({"model": "m", "stream": True, "stream_options": options}).encode()
    request = parse_request("openai", body)
    assert request is not None and request.wants_usage is wants


def test_stream_must_be_true_itself() -> None:
    request = parse_request("openai", b'{"stream": "yes"}')
    assert request is not None and request.stream is False and request.model is None


@pytest.mark.parametrize(
    "body",
    [b"", b"[1, 2]", b'"text"', b"null", b"{", b"\xff\xfe{}", b"model=gpt-4o", b'{"a": 1} x'],
)
def test_a_body_that_is_not_a_json_object_is_no_llm_request(body: bytes) -> None:
    assert parse_request("openai", body) is None
    assert parse_request("anthropic", body) is None


def test_a_huge_integer_is_still_parsed() -> None:
    request = parse_request("openai", b'{"model": "m", "seed": 123456789012345678901234567890}')
    assert request is not None and request.model == "m"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_request_never_raises(body: bytes) -> None:
    for format in ("openai", "anthropic"):
        request = parse_request(format, body)
        assert request is None or request.input_estimate == math.ceil(len(body) / 4)


def _without(edited: bytes, member: bytes) -> bytes:
    assert member in edited
    return edited.replace(member, b"", 1)


def test_stream_usage_is_added_last_and_nothing_else_changes() -> None:
    edited = with_stream_usage(OPENAI_REQUEST)
    assert edited.endswith(b',"stream_options":{"include_usage":true}}')
    assert _without(edited, b',"stream_options":{"include_usage":true}') == OPENAI_REQUEST
    request = parse_request("openai", edited)
    assert request is not None and request.wants_usage


def test_stream_usage_keeps_other_stream_options() -> None:
    body = (
        b'{"model": "gpt-4o",\n "stream_options": {"include_obfuscation": false},\n "stream": true}'
    )
    edited = with_stream_usage(body)
    assert edited == (
        b'{"model": "gpt-4o",\n "stream_options": '
        b'{"include_obfuscation":false,"include_usage":true},\n "stream": true}'
    )


def test_stream_usage_false_becomes_true() -> None:
    edited = with_stream_usage(b'{"stream":true,"stream_options":{"include_usage":false}}')
    assert json.loads(edited) == {"stream": True, "stream_options": {"include_usage": True}}


def test_stream_options_named_only_in_a_message_is_not_a_member() -> None:
    body = b'{"messages":[{"role":"user","content":"stream_options"}],"stream":true}'
    edited = with_stream_usage(body)
    assert json.loads(edited)["stream_options"] == {"include_usage": True}
    assert _without(edited, b',"stream_options":{"include_usage":true}') == body


def test_stream_usage_on_an_empty_object() -> None:
    assert with_stream_usage(b" {\n} ") == b' {"stream_options":{"include_usage":true}\n} '
    assert (
        with_stream_usage(b'{"a": 1\n}\n')
        == b'{"a": 1,"stream_options":{"include_usage":true}\n}\n'
    )


@pytest.mark.parametrize(
    ("format", "body", "expected"),
    [
        (
            "openai",
            b'{"model": "gpt-4o", "max_completion_tokens": 4096}',
            b'{"model": "gpt-4o", "max_completion_tokens": 100}',
        ),
        (
            "openai",
            b'{"model": "gpt-4o", "max_tokens": 4096}',
            b'{"model": "gpt-4o", "max_tokens": 100}',
        ),
        (
            "openai",
            b'{"max_tokens": 4096, "max_completion_tokens": 4096}',
            b'{"max_tokens": 100, "max_completion_tokens": 100}',
        ),
        ("openai", b'{"model": "gpt-4o"}', b'{"model": "gpt-4o","max_tokens":100}'),
        (
            "anthropic",
            b'{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[]}',
            b'{"model":"claude-haiku-4-5","max_tokens":100,"messages":[]}',
        ),
        (
            "anthropic",
            b'{"max_completion_tokens": 5, "model": "x"}',
            b'{"max_completion_tokens": 5, "model": "x","max_tokens":100}',
        ),
    ],
)
def test_with_max_tokens(format: str, body: bytes, expected: bytes) -> None:
    assert with_max_tokens(format, body, 100) == expected  # type: ignore[arg-type]


def test_a_key_spelt_with_escapes_never_beats_the_clamp() -> None:
    body = b'{"model": "claude-haiku-4-5", "max\\u005ftokens": 64000}'
    request = parse_request("anthropic", body)
    assert request is not None and request.max_tokens == 64000
    edited = with_max_tokens("anthropic", body, 100)
    assert json.loads(edited)["max_tokens"] == 100


def test_with_max_tokens_keeps_non_ascii_text_byte_for_byte() -> None:
    body = '{"messages":[{"content":"héllo ✓ \\u00e9"}],"max_tokens":900}'.encode()
    edited = with_max_tokens("anthropic", body, 10)
    assert edited == body.replace(b"900", b"10")


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(max_size=10), _JSON_VALUES, max_size=5),
    st.sampled_from([None, 1, 2]),
    st.booleans(),
)
def test_edits_keep_the_document_and_change_only_their_member(
    document: dict[str, Any], indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps(document, indent=indent, ensure_ascii=ascii_only).encode()
    options = document.get("stream_options")
    expected_options = dict(options) if isinstance(options, dict) else {}
    expected_options["include_usage"] = True
    assert json.loads(with_stream_usage(body)) == {**document, "stream_options": expected_options}

    edited = json.loads(with_max_tokens("openai", body, 7))
    changed = [name for name in ("max_completion_tokens", "max_tokens") if name in document]
    assert edited == {**document, **{name: 7 for name in changed or ["max_tokens"]}}


def test_with_model_changes_only_the_model_member_every_other_byte_kept() -> None:
    from sidecar.llm.formats import with_model

    # A 20-digit number: a parse and re-dump would turn it into 1e+20.
    body = b'{"model": "gpt-4o-mini", "max_tokens": 99999999999999999999, "messages": []}'
    assert parse_request("openai", body) is not None
    assert with_model(body, "llama3.1") == body.replace(b"gpt-4o-mini", b"llama3.1")
