"""Request translation both ways, on fixtures written from the documented wire formats."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.llm.translate import (
    Untranslatable,
    request_to_anthropic,
    request_to_openai,
    translated_path,
)
from tests.sidecar.llm.translate.wire import (
    assert_anthropic_request,
    assert_openai_request,
    load,
)


def to_anthropic(body: dict[str, Any], default_max_tokens: int = 1000) -> dict[str, Any]:
    out = request_to_anthropic(
        body, model="claude-haiku-4-5", default_max_tokens=default_max_tokens
    )
    assert_anthropic_request(out)
    return out


def to_openai(body: dict[str, Any]) -> dict[str, Any]:
    out = request_to_openai(body, model="gpt-4o-mini")
    assert_openai_request(out)
    return out


def openai_body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **fields}


def anthropic_body(**fields: Any) -> dict[str, Any]:
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


# -- OpenAI -> Anthropic -----------------------------------------------------


def test_openai_conversation_becomes_alternating_anthropic_turns_with_ids_kept() -> None:
    out = to_anthropic(load("openai_request_tool_conversation.json"))

    assert out["model"] == "claude-haiku-4-5"
    assert out["system"] == [
        {"type": "text", "text": "You are a weather assistant."},
        {"type": "text", "text": "Answer in Celsius."},
    ]
    assert [m["role"] for m in out["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    question, calls, results, answer, follow_up = out["messages"]
    assert question["content"][0] == {
        "type": "text",
        "text": "What is the weather in Paris and in Oslo? Here is a photo of my window.",
    }
    image = question["content"][1]
    assert image["type"] == "image"
    assert image["source"]["type"] == "base64"
    assert image["source"]["media_type"] == "image/png"
    assert image["source"]["data"].startswith("iVBORw0KGgo")
    assert calls["content"] == [
        {
            "type": "tool_use",
            "id": "call_paris_01",
            "name": "get_weather",
            "input": {"city": "Paris"},
        },
        {
            "type": "tool_use",
            "id": "call_oslo_02",
            "name": "get_weather",
            "input": {"city": "Oslo", "unit": "celsius"},
        },
    ]
    # the two tool messages merge into one user turn
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "call_paris_01", "content": "18 C, sunny"},
        {
            "type": "tool_result",
            "tool_use_id": "call_oslo_02",
            "content": [{"type": "text", "text": "4 C, rain"}],
        },
    ]
    assert answer["content"] == "Paris is 18 C and sunny; Oslo is 4 C with rain."
    assert follow_up["content"] == "Thanks. And tomorrow?"


def test_openai_scalars_and_tools_map_to_anthropic_fields() -> None:
    out = to_anthropic(load("openai_request_tool_conversation.json"))

    assert out["max_tokens"] == 512
    assert out["temperature"] == 0.7
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["\n\nHuman:", "END"]
    assert out["metadata"] == {"user_id": "user-1234"}
    assert out["stream"] is False
    assert out["tool_choice"] == {"type": "auto"}
    weather, clock = out["tools"]
    assert weather["name"] == "get_weather"
    assert weather["description"] == "Current weather for a city"
    assert weather["input_schema"]["required"] == ["city"]
    # a tool without parameters still gets the object schema Anthropic requires
    assert clock == {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice_to_anthropic(choice: Any, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    out = to_anthropic(openai_body(tools=tools, tool_choice=choice))
    assert out["tool_choice"] == expected
    assert (
        to_openai(anthropic_body(tools=out["tools"], tool_choice=expected))["tool_choice"] == choice
    )


def test_parallel_tool_calls_false_disables_parallel_tool_use_and_back() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    out = to_anthropic(openai_body(tools=tools, parallel_tool_calls=False))
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    named = to_anthropic(
        openai_body(
            tools=tools,
            parallel_tool_calls=False,
            tool_choice={"type": "function", "function": {"name": "f"}},
        )
    )
    assert named["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}
    back = to_openai(anthropic_body(tools=out["tools"], tool_choice=out["tool_choice"]))
    assert back["parallel_tool_calls"] is False
    assert back["tool_choice"] == "auto"


def test_max_tokens_prefers_max_completion_tokens_and_defaults_to_the_route_value() -> None:
    assert to_anthropic(openai_body())["max_tokens"] == 1000
    assert to_anthropic(openai_body(max_tokens=50))["max_tokens"] == 50
    assert to_anthropic(openai_body(max_tokens=50, max_completion_tokens=70))["max_tokens"] == 70
    assert to_anthropic(openai_body(max_tokens=None), default_max_tokens=4096)["max_tokens"] == 4096


@pytest.mark.parametrize(("openai", "anthropic"), [(0, 0.0), (0.2, 0.2), (0.7, 0.7), (0.99, 0.99)])
def test_temperature_inside_anthropics_range_keeps_its_number(
    openai: float, anthropic: float
) -> None:
    assert to_anthropic(openai_body(temperature=openai))["temperature"] == anthropic


@pytest.mark.parametrize("openai", [1, 1.5, 2])
def test_temperature_at_or_above_the_default_is_anthropics_default(openai: float) -> None:
    # clamped to 1, Anthropic's hottest and its default, which is sent as no value
    assert "temperature" not in to_anthropic(openai_body(temperature=openai))


def test_top_p_is_kept_unless_it_is_the_default() -> None:
    assert to_anthropic(openai_body(top_p=0.5))["top_p"] == 0.5
    assert "top_p" not in to_anthropic(openai_body(top_p=1))


def test_temperature_inside_both_ranges_survives_the_way_back() -> None:
    assert to_openai(anthropic_body(temperature=0.3))["temperature"] == 0.3


def test_stop_string_becomes_one_stop_sequence() -> None:
    assert to_anthropic(openai_body(stop="END"))["stop_sequences"] == ["END"]


def test_remote_image_url_becomes_a_url_source() -> None:
    url = "https://example.com/cat.jpg"
    content = [{"type": "image_url", "image_url": {"url": url}}]
    out = to_anthropic(openai_body(messages=[{"role": "user", "content": content}]))
    assert out["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": url}}
    ]


def test_consecutive_same_role_messages_merge_and_tool_results_come_first() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "", "tool_calls": [_call("c1", "{}")]},
        {"role": "user", "content": "also this"},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    out = to_anthropic(openai_body(messages=messages))
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
        },
        # an empty "" content next to tool calls is no empty text block (Anthropic rejects those)
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "done"},
                {"type": "text", "text": "also this"},
            ],
        },
    ]


def test_empty_arguments_of_a_no_parameter_tool_are_an_empty_object() -> None:
    messages = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "tool_calls": [_call("c1", "")]},
        {"role": "tool", "tool_call_id": "c1", "content": "noon"},
    ]
    out = to_anthropic(openai_body(messages=messages))
    assert out["messages"][1]["content"][0]["input"] == {}


def test_ignored_openai_fields_do_not_reach_anthropic() -> None:
    body = openai_body(seed=7, store=True, metadata={"a": "b"}, service_tier="auto", n=1)
    body["stream_options"] = {"include_usage": True}
    out = to_anthropic(body)
    assert set(out) == {"model", "messages", "max_tokens"}


# -- Anthropic -> OpenAI -----------------------------------------------------


def test_anthropic_conversation_becomes_openai_messages_with_ids_kept() -> None:
    out = to_openai(load("anthropic_request_tool_conversation.json"))

    assert out["model"] == "gpt-4o-mini"
    system, question, calls, paris, oslo, follow_up = out["messages"]
    assert system == {
        "role": "system",
        "content": [
            {"type": "text", "text": "You are a weather assistant."},
            {"type": "text", "text": "Answer in Celsius."},
        ],
    }
    assert question["role"] == "user"
    assert [part["type"] for part in question["content"]] == ["text", "image_url", "image_url"]
    assert question["content"][1]["image_url"]["url"] == (
        "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP"
    )
    assert question["content"][2]["image_url"]["url"] == "https://upload.example.com/window.png"
    assert calls["role"] == "assistant"
    assert calls["content"] == "I'll check both cities."
    assert [c["id"] for c in calls["tool_calls"]] == [
        "toolu_01A09q90qw90lq917835lq9",
        "toolu_01B19r91rx91mr928946mr0",
    ]
    assert json.loads(calls["tool_calls"][1]["function"]["arguments"]) == {"city": "Oslo"}
    # tool results are tool messages right after the tool calls, the user's words after them
    assert paris == {
        "role": "tool",
        "tool_call_id": "toolu_01A09q90qw90lq917835lq9",
        "content": "18 C, sunny",
    }
    assert oslo["role"] == "tool"
    assert oslo["content"] == "4 C, rain"
    assert follow_up == {"role": "user", "content": "Which is warmer?"}


def test_anthropic_scalars_map_to_openai_fields() -> None:
    out = to_openai(load("anthropic_request_tool_conversation.json"))

    assert out["max_completion_tokens"] == 1024
    assert out["temperature"] == 0.4
    assert out["top_p"] == 0.95
    assert out["stop"] == ["END"]
    assert out["user"] == "user-1234"
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]


def test_assistant_turn_with_only_tool_use_has_null_content() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
        },
    ]
    out = to_openai(anthropic_body(messages=messages))
    assert out["messages"][1]["content"] is None
    assert out["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_disabled_thinking_is_no_refusal() -> None:
    assert "thinking" not in to_openai(anthropic_body(thinking={"type": "disabled"}))


# -- round trips --------------------------------------------------------------


_EMPTY_SCHEMA = {"type": "object", "properties": {}}


def meaning(body: dict[str, Any]) -> dict[str, Any]:
    """What an OpenAI request asks, independent of how it is split into messages/parts."""
    system: list[str] = []
    turns: list[tuple[Any, ...]] = []
    for message in body["messages"]:
        content = message.get("content")
        parts = [content] if isinstance(content, str) else content or []
        texts = tuple(
            p if isinstance(p, str) else p.get("text") or p.get("image_url") for p in parts
        )
        texts = tuple(t["url"] if isinstance(t, dict) else t for t in texts if t)
        if message["role"] in ("system", "developer"):
            system.extend(str(t) for t in texts)
            continue
        calls = tuple(
            (c["id"], c["function"]["name"], json.dumps(json.loads(c["function"]["arguments"])))
            for c in message.get("tool_calls") or []
        )
        turns.append((message["role"], message.get("tool_call_id"), texts, calls))
    scalars = {k: v for k, v in body.items() if k not in ("messages", "model", "max_tokens")}
    # a function without parameters takes the empty object schema
    scalars["tools"] = [
        {**tool["function"], "parameters": tool["function"].get("parameters") or _EMPTY_SCHEMA}
        for tool in body.get("tools", [])
    ]
    scalars["max"] = body.get("max_completion_tokens", body.get("max_tokens"))
    scalars.pop("max_completion_tokens", None)
    return {"system": system, "turns": turns, **scalars}


def test_openai_request_survives_a_trip_through_anthropic() -> None:
    original = load("openai_request_tool_conversation.json")
    back = to_openai(to_anthropic(original))
    expected = meaning(original)
    # Anthropic cannot say "stream: false" back; it is the default on both sides.
    expected.pop("stream")
    assert meaning(back) == expected


def test_anthropic_request_survives_a_trip_through_openai() -> None:
    original = load("anthropic_request_tool_conversation.json")
    back = to_anthropic(to_openai(original), default_max_tokens=1)
    # tool_result content as text blocks vs a string says the same thing
    original["messages"][2]["content"][1]["content"] = "4 C, rain"
    del original["messages"][2]["content"][1]["is_error"]
    assert back == {**original, "model": "claude-haiku-4-5"}


# -- refusals ----------------------------------------------------------------


def _call(call_id: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": arguments}}


def _user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


OPENAI_REFUSALS: list[tuple[str, dict[str, Any]]] = [
    ("n", {"n": 2}),
    ("logprobs", {"logprobs": True}),
    ("top_logprobs", {"top_logprobs": 3}),
    ("audio", {"audio": {"voice": "alloy", "format": "wav"}}),
    ("modalities", {"modalities": ["text", "audio"]}),
    ("response_format", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
    ("response_format", {"response_format": {"type": "json_object"}}),
    ("frequency_penalty", {"frequency_penalty": 0.5}),
    ("presence_penalty", {"presence_penalty": -0.5}),
    ("logit_bias", {"logit_bias": {"50256": -100}}),
    ("reasoning_effort", {"reasoning_effort": "high"}),
    ("verbosity", {"verbosity": "low"}),
    ("functions", {"functions": [{"name": "f"}]}),
    ("web_search_options", {"web_search_options": {}}),
    ("tools.custom", {"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}),
    ("tool_choice", {"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}),
    ("some_future_field", {"some_future_field": True}),
    (
        "messages.assistant.tool_calls.arguments",
        {"messages": [{"role": "assistant", "tool_calls": [_call("c1", "{not json")]}]},
    ),
    (
        "messages.assistant.tool_calls.arguments",
        {"messages": [{"role": "assistant", "tool_calls": [_call("c1", "[1, 2]")]}]},
    ),
    (
        "messages.user.input_audio",
        {
            "messages": _user(
                {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}
            )
        },
    ),
    (
        "messages.user.file",
        {
            "messages": _user(
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER"}}
            )
        },
    ),
    (
        "messages.user.image_url.media_type",
        {
            "messages": _user(
                {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}
            )
        },
    ),
    ("messages.role.function", {"messages": [{"role": "function", "name": "f", "content": "x"}]}),
    (
        "messages.assistant.tool_calls.id",
        {"messages": [{"role": "assistant", "tool_calls": [_call("functions.f:0", "{}")]}]},
    ),
    (
        "messages.assistant.audio",
        {"messages": [{"role": "assistant", "content": None, "audio": {"id": "audio_1"}}]},
    ),
]


@pytest.mark.parametrize(("field", "fields"), OPENAI_REFUSALS, ids=[f for f, _ in OPENAI_REFUSALS])
def test_openai_feature_anthropic_cannot_express_is_refused(
    field: str, fields: dict[str, Any]
) -> None:
    with pytest.raises(Untranslatable) as refused:
        request_to_anthropic(openai_body(**fields), model="claude", default_max_tokens=10)
    assert refused.value.field == field


def test_neutral_values_of_refusable_fields_are_accepted() -> None:
    body = openai_body(
        n=1,
        logprobs=False,
        frequency_penalty=0,
        presence_penalty=0.0,
        logit_bias={},
        modalities=["text"],
        response_format={"type": "text"},
        top_logprobs=None,
    )
    assert set(to_anthropic(body)) == {"model", "messages", "max_tokens"}


ANTHROPIC_REFUSALS: list[tuple[str, dict[str, Any]]] = [
    ("top_k", {"top_k": 5}),
    ("thinking", {"thinking": {"type": "enabled", "budget_tokens": 2000}}),
    ("cache_control", {"cache_control": {"type": "ephemeral"}}),
    (
        "cache_control",
        {"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]},
    ),
    (
        "cache_control",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
                    ],
                }
            ]
        },
    ),
    (
        "cache_control",
        {
            "tools": [
                {
                    "name": "f",
                    "input_schema": {"type": "object"},
                    "cache_control": {"type": "ephemeral"},
                }
            ]
        },
    ),
    (
        "messages.user.document",
        {
            "messages": _user(
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"},
                }
            )
        },
    ),
    (
        "tools.web_search_20250305",
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
    ),
    ("tools.defer_loading", {"tools": [{"name": "f", "input_schema": {}, "defer_loading": True}]}),
    (
        "messages.assistant.thinking",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"}],
                },
            ]
        },
    ),
    ("stop_sequences", {"stop_sequences": ["a", "b", "c", "d", "e"]}),
    ("tools.name", {"tools": [{"name": "n" * 65, "input_schema": {"type": "object"}}]}),
    (
        "messages.assistant.tool_use.id",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t" * 41, "name": "f", "input": {}}],
                },
            ]
        },
    ),
    ("container", {"container": "container_1"}),
    ("mcp_servers", {"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "m"}]}),
    ("tool_choice", {"tool_choice": "auto"}),
]


@pytest.mark.parametrize(
    ("field", "fields"),
    ANTHROPIC_REFUSALS,
    ids=[f"{f}-{i}" for i, (f, _) in enumerate(ANTHROPIC_REFUSALS)],
)
def test_anthropic_feature_openai_cannot_express_is_refused(
    field: str, fields: dict[str, Any]
) -> None:
    with pytest.raises(Untranslatable) as refused:
        request_to_openai(anthropic_body(**fields), model="gpt")
    assert refused.value.field == field


def test_untranslatable_names_the_field_and_never_the_value() -> None:
    secret = "sk-live-do-not-log"
    with pytest.raises(Untranslatable) as refused:
        request_to_anthropic(openai_body(logit_bias={secret: 1}), model="c", default_max_tokens=1)
    assert secret not in str(refused.value)
    assert str(refused.value) == "cannot translate logit_bias"


# -- paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("openai", "anthropic"),
    [
        ("/v1/chat/completions", "/v1/messages"),
        ("/openai/v1/chat/completions", "/openai/v1/messages"),
        ("/chat/completions", "/messages"),
        ("/v1/chat/completions?trace=1", "/v1/messages?trace=1"),
    ],
)
def test_paths_swap_the_endpoint_and_keep_the_rest(openai: str, anthropic: str) -> None:
    assert translated_path(openai, "anthropic") == anthropic
    assert translated_path(anthropic, "openai") == openai


def test_a_path_already_in_the_target_form_is_kept() -> None:
    assert translated_path("/v1/messages", "anthropic") == "/v1/messages"
    assert translated_path("/v1/chat/completions/", "anthropic") == "/v1/messages"


@pytest.mark.parametrize(
    ("path", "to"),
    [
        ("/v1/models", "anthropic"),
        ("/v1/messages/count_tokens", "openai"),
        ("/v1/embeddings", "anthropic"),
    ],
)
def test_a_path_with_no_counterpart_is_refused(path: str, to: Any) -> None:
    with pytest.raises(Untranslatable) as refused:
        translated_path(path, to)
    assert refused.value.field == "path"


def test_a_field_name_from_the_body_is_repeated_only_if_it_is_a_plain_name() -> None:
    with pytest.raises(Untranslatable) as refused:
        request_to_openai(anthropic_body(**{"Bearer sk-live-123": 1}), model="gpt")
    assert refused.value.field == "?"
    content = [{"type": "<script>", "text": "x"}]
    with pytest.raises(Untranslatable) as refused:
        request_to_anthropic(
            openai_body(messages=[{"role": "user", "content": content}]),
            model="c",
            default_max_tokens=1,
        )
    assert refused.value.field == "messages.user.?"
