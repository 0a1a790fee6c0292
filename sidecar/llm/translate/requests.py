"""Request bodies and paths: OpenAI Chat Completions <-> Anthropic Messages.

Pure functions over parsed JSON. A field the other side cannot express raises
`Untranslatable(field)` instead of being dropped: the caller skips that endpoint
(`llm_untranslatable`), so a call is never silently changed. The only fields let
go without a refusal are the ones that do not change what the model answers
(storage, billing tier, cache keys, `seed`, `detail` on images, a message's
`name`); docs/llm.md lists them.

Temperature: OpenAI takes 0-2, Anthropic 0-1, both default to 1. We clamp
rather than halve: 0 stays greedy, 0.7 stays 0.7, the default stays the
default, and only the "hotter than default" range (1-2) collapses to 1, the
hottest Anthropic offers. Halving would turn every common setting (0.2, 0.7,
the default 1) into a colder one. Anthropic -> OpenAI keeps the number (0-1
is inside 0-2), so a value in 0-1 survives a round trip exactly.

Sampling on Anthropic: API version 2026-10-21 (the default of its SDK 2.x) has
no temperature/top_p/top_k at all, and the newest models refuse non-default
values even under 2023-06-01 (the version the sidecar sends on a translated
call). We still send a non-default value rather than drop it: a model that
cannot honour it answers 400 naming the field, which is the truth; dropping it
would change the answer silently. A value equal to the default is not sent.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

Format = Literal["openai", "anthropic"]

_OPENAI_PATH = "chat/completions"
_ANTHROPIC_PATH = "messages"

# Anthropic accepts only these image types (its vision docs); anything else is refused.
_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# OpenAI refuses more than four stop sequences; Anthropic allows more.
_OPENAI_MAX_STOP = 4
# Names and ids each side accepts (their API errors say so): Anthropic tool names
# may be 128 long, OpenAI's 64; OpenAI tool-call ids at most 40; Anthropic
# tool_use ids only letters, digits, _ and - (some OpenAI-compatible servers
# use ids like "functions.get_weather:0").
_OPENAI_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_OPENAI_MAX_CALL_ID = 40
_ANTHROPIC_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")


class Untranslatable(Exception):
    """A call (or an answer, or a path) uses something the other format cannot express.

    `.field` names it (`n`, `logprobs`, `messages.assistant.thinking`, `path`,
    `tool_calls.arguments`, ...) for the `llm_untranslatable` event. It never
    carries a value from the body.
    """

    def __init__(self, field: str) -> None:
        # Parts of a field name can come from the body (an unknown key, a block
        # type): anything that is not a plain identifier is not repeated.
        field = ".".join(part if _FIELD_PART.fullmatch(part) else "?" for part in field.split("."))
        super().__init__(f"cannot translate {field}")
        self.field = field


_FIELD_PART = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Untranslatable(field)
    return value


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise Untranslatable(field)
    return value


def _number(value: Any, field: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Untranslatable(field)
    return value


def _type_of(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else "?"


# -- paths -------------------------------------------------------------------


def translated_path(path: str, to: Format) -> str:
    """`…/chat/completions` <-> `…/messages`, everything before and any query kept.

    Only the trailing endpoint segments are swapped, so `/v1/chat/completions`
    becomes `/v1/messages`, `/openai/v1/chat/completions` keeps `/openai/v1/`, and a
    path with no `/v1` (`/chat/completions`) becomes `/messages`. A path already in
    the target form is returned as is; any other path (`/v1/models`,
    `/v1/messages/count_tokens`) has no counterpart: `Untranslatable("path")`.
    """
    route, sep, query = path.partition("?")
    trimmed = route.rstrip("/")
    source, target = (
        (_OPENAI_PATH, _ANTHROPIC_PATH) if to == "anthropic" else (_ANTHROPIC_PATH, _OPENAI_PATH)
    )
    if _ends_with_segments(trimmed, target):
        return path
    if not _ends_with_segments(trimmed, source):
        raise Untranslatable("path")
    return trimmed[: len(trimmed) - len(source)] + target + sep + query


def _ends_with_segments(path: str, segments: str) -> bool:
    return path == segments or path.endswith("/" + segments)


# -- OpenAI -> Anthropic -----------------------------------------------------

# Fields that do not change the answer and have no Anthropic counterpart.
_OPENAI_IGNORED = frozenset(
    {
        "metadata",  # OpenAI's stored-completion tags, never shown to the model
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "seed",  # best effort on OpenAI itself; no determinism promise to lose
        "prediction",  # a latency hint
        "stream_options",  # Anthropic always streams usage
    }
)
_OPENAI_HANDLED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "n",
        "logprobs",
        "top_logprobs",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "response_format",
        "modalities",
    }
)


def request_to_anthropic(
    body: dict[str, Any], *, model: str, default_max_tokens: int
) -> dict[str, Any]:
    """An OpenAI Chat Completions request as an Anthropic Messages request."""
    present = {key: value for key, value in body.items() if value is not None}
    for key in present:
        if key not in _OPENAI_HANDLED and key not in _OPENAI_IGNORED:
            raise Untranslatable(key)
    _refuse_openai_only(present)

    out: dict[str, Any] = {"model": model}
    system, messages = _messages_to_anthropic(_as_list(present.get("messages"), "messages"))
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    limit = "max_completion_tokens" if "max_completion_tokens" in present else "max_tokens"
    out["max_tokens"] = _integer(present.get(limit, default_max_tokens), limit)
    # A default (1) is sent as no value at all: Anthropic's newest models refuse
    # non-default sampling parameters, and no value is that same default.
    temperature = min(_number(present.get("temperature", 1), "temperature"), 1)
    if temperature != 1:
        out["temperature"] = temperature
    top_p = _number(present.get("top_p", 1), "top_p")
    if top_p != 1:
        out["top_p"] = top_p
    stop = present.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif stop:
        out["stop_sequences"] = [_str(item, "stop") for item in _as_list(stop, "stop")]
    if "stream" in present:
        out["stream"] = bool(present["stream"])
    user = present.get("safety_identifier", present.get("user"))
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    tools = present.get("tools")
    if tools:
        out["tools"] = [_tool_to_anthropic(tool) for tool in _as_list(tools, "tools")]
    choice = _tool_choice_to_anthropic(present.get("tool_choice"))
    if present.get("parallel_tool_calls") is False and tools:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _integer(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Untranslatable(field)
    return value


def _refuse_openai_only(present: dict[str, Any]) -> None:
    if present.get("n", 1) != 1:
        raise Untranslatable("n")
    if present.get("logprobs"):
        raise Untranslatable("logprobs")
    if "top_logprobs" in present:
        raise Untranslatable("top_logprobs")
    for penalty in ("frequency_penalty", "presence_penalty"):
        if present.get(penalty, 0) != 0:
            raise Untranslatable(penalty)
    if present.get("logit_bias"):
        raise Untranslatable("logit_bias")
    if any(mode != "text" for mode in _as_list(present.get("modalities", []), "modalities")):
        raise Untranslatable("modalities")
    response_format = present.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type", "text") != "text":
        # json_object / json_schema: Anthropic has no JSON mode here; dropping it would
        # hand the app prose where it expects JSON.
        raise Untranslatable("response_format")


def _messages_to_anthropic(
    messages: list[Any],
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    system_parts: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise Untranslatable("messages")
        role = message.get("role")
        if role in ("system", "developer"):
            # Anthropic has one top-level system prompt: every system/developer message
            # goes there, in order, each as its own text block.
            system_parts.extend(_system_blocks(message.get("content")))
        elif role == "user":
            _append_turn(turns, "user", _user_blocks(message.get("content")))
        elif role == "assistant":
            _append_turn(turns, "assistant", _assistant_blocks(message))
        elif role == "tool":
            _append_turn(turns, "user", [_tool_result_block(message)])
        else:
            raise Untranslatable(f"messages.role.{role}")
    system: str | list[dict[str, Any]] | None = None
    if len(system_parts) == 1:
        system = system_parts[0]["text"]
    elif system_parts:
        system = system_parts
    return system, [_finish_turn(turn) for turn in turns]


def _append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic wants user and assistant to alternate: same-role neighbours merge."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _finish_turn(turn: dict[str, Any]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = turn["content"]
    if turn["role"] == "user":
        # Anthropic requires a user turn's tool_result blocks to come before its text.
        results = [block for block in blocks if block["type"] == "tool_result"]
        others = [block for block in blocks if block["type"] != "tool_result"]
        blocks = results + others
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return {"role": turn["role"], "content": blocks}


def _system_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [_text_part(part, "messages.system") for part in _as_list(content, "messages.system")]


def _text_part(part: Any, where: str) -> dict[str, Any]:
    if _type_of(part) != "text":
        raise Untranslatable(f"{where}.{_type_of(part)}")
    return {"type": "text", "text": _str(part.get("text", ""), f"{where}.text")}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        # An empty user message is kept: Anthropic's refusal of it is a real answer.
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in _as_list(content, "messages.user"):
        kind = _type_of(part)
        if kind == "text":
            text = _text_part(part, "messages.user")
            if text["text"]:
                blocks.append(text)
        elif kind == "image_url":
            blocks.append(_image_to_anthropic(part.get("image_url")))
        else:
            # input_audio, file (documents/PDF), anything newer
            raise Untranslatable(f"messages.user.{kind}")
    return blocks


def _image_to_anthropic(image: Any) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise Untranslatable("messages.user.image_url")
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64":
            raise Untranslatable("messages.user.image_url")
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise Untranslatable("messages.user.image_url.media_type")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise Untranslatable("messages.user.image_url")


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    for refused in ("audio", "function_call"):
        if message.get(refused) is not None:
            raise Untranslatable(f"messages.assistant.{refused}")
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str):
        if content:
            # Anthropic rejects empty text blocks (a tool-call-only turn often has "").
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        for part in _as_list(content, "messages.assistant"):
            kind = _type_of(part)
            if kind == "text":
                text = _str(part.get("text", ""), "messages.assistant.text")
            elif kind == "refusal":
                text = _str(part.get("refusal", ""), "messages.assistant.refusal")
            else:
                raise Untranslatable(f"messages.assistant.{kind}")
            if text:
                blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    for call in _as_list(calls, "messages.assistant.tool_calls"):
        blocks.append(_tool_call_to_tool_use(call))
    return blocks


def _tool_call_to_tool_use(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise Untranslatable("messages.assistant.tool_calls.type")
    function = _dict(call.get("function"), "messages.assistant.tool_calls.function")
    arguments = parse_arguments(
        function.get("arguments"), "messages.assistant.tool_calls.arguments"
    )
    call_id = call.get("id")
    if not isinstance(call_id, str) or not _ANTHROPIC_TOOL_ID.fullmatch(call_id):
        raise Untranslatable("messages.assistant.tool_calls.id")
    return {
        "type": "tool_use",
        "id": call_id,
        "name": _str(function.get("name"), "messages.assistant.tool_calls.name"),
        "input": arguments,
    }


def parse_arguments(arguments: Any, field: str) -> dict[str, Any]:
    """OpenAI's JSON-string tool arguments as an object; anything else is `field`.

    A tool with no parameters may carry "" (or nothing): that is {}.
    """
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = json.loads(arguments)
    except (TypeError, ValueError):
        raise Untranslatable(field) from None
    if not isinstance(parsed, dict):
        raise Untranslatable(field)
    return parsed


def _tool_result_block(message: dict[str, Any]) -> dict[str, Any]:
    call_id = _str(message.get("tool_call_id"), "messages.tool.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        parts = [_text_part(part, "messages.tool") for part in _as_list(content, "messages.tool")]
        block["content"] = [part for part in parts if part["text"]]
    return block


def _tool_to_anthropic(tool: Any) -> dict[str, Any]:
    if _type_of(tool) != "function":
        raise Untranslatable(f"tools.{_type_of(tool)}")
    function = _dict(tool.get("function"), "tools.function")
    out: dict[str, Any] = {"name": _str(function.get("name"), "tools.function.name")}
    if function.get("description"):
        out["description"] = _str(function["description"], "tools.function.description")
    # Anthropic requires an object schema; OpenAI lets a no-argument tool omit it.
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    out["input_schema"] = _dict(parameters, "tools.function.parameters")
    if function.get("strict") is not None:
        out["strict"] = bool(function["strict"])
    return out


def _tool_choice_to_anthropic(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if _type_of(choice) == "function":
        function = _dict(choice.get("function"), "tool_choice.function")
        return {"type": "tool", "name": _str(function.get("name"), "tool_choice.function.name")}
    raise Untranslatable("tool_choice")


# -- Anthropic -> OpenAI -----------------------------------------------------

_ANTHROPIC_IGNORED = frozenset({"service_tier", "speed"})
_ANTHROPIC_HANDLED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "thinking",
    }
)


def request_to_openai(body: dict[str, Any], *, model: str) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI Chat Completions request."""
    present = {key: value for key, value in body.items() if value is not None}
    for key in present:
        if key not in _ANTHROPIC_HANDLED and key not in _ANTHROPIC_IGNORED:
            # top_k, cache_control (automatic caching), container, mcp_servers,
            # context_management, output_config, inference_geo, anything newer
            raise Untranslatable(key)
    if "thinking" in present and _type_of(present["thinking"]) != "disabled":
        raise Untranslatable("thinking")

    messages: list[dict[str, Any]] = []
    if "system" in present:
        messages.extend(_system_to_openai(present["system"]))
    for message in _as_list(present.get("messages"), "messages"):
        messages.extend(_message_to_openai(message))

    out: dict[str, Any] = {"model": model, "messages": messages}
    if "max_tokens" in present:
        # max_tokens is deprecated on OpenAI and refused by its reasoning models.
        out["max_completion_tokens"] = _integer(present["max_tokens"], "max_tokens")
    for key in ("temperature", "top_p"):
        if key in present:
            out[key] = _number(present[key], key)
    stops = _as_list(present.get("stop_sequences", []), "stop_sequences")
    if stops:
        if len(stops) > _OPENAI_MAX_STOP:
            raise Untranslatable("stop_sequences")
        out["stop"] = [_str(stop, "stop_sequences") for stop in stops]
    if present.get("stream"):
        out["stream"] = True
        # Without it an OpenAI stream carries no usage, and cost/budgets need it.
        out["stream_options"] = {"include_usage": True}
    user = _dict(present.get("metadata", {}), "metadata").get("user_id")
    if user:
        out["user"] = _str(user, "metadata.user_id")
    tools = present.get("tools")
    if tools:
        out["tools"] = [_tool_to_openai(tool) for tool in _as_list(tools, "tools")]
    choice = present.get("tool_choice")
    if isinstance(choice, dict):
        out["tool_choice"] = _tool_choice_to_openai(choice)
        if choice.get("disable_parallel_tool_use") and tools:
            out["parallel_tool_calls"] = False
    elif choice is not None:
        raise Untranslatable("tool_choice")
    return out


def _system_to_openai(system: Any) -> list[dict[str, Any]]:
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    parts = [_anthropic_text(block, "system") for block in _as_list(system, "system")]
    if not parts:
        return []
    if len(parts) == 1:
        return [{"role": "system", "content": parts[0]["text"]}]
    return [{"role": "system", "content": parts}]


def _anthropic_text(block: Any, where: str) -> dict[str, Any]:
    if _type_of(block) != "text":
        raise Untranslatable(f"{where}.{_type_of(block)}")
    _refuse_cache_control(block)
    # citations on a text block only annotate it; the text is what the model reads.
    return {"type": "text", "text": _str(block.get("text", ""), f"{where}.text")}


def _refuse_cache_control(block: dict[str, Any]) -> None:
    if block.get("cache_control") is not None:
        raise Untranslatable("cache_control")


def _message_to_openai(message: Any) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise Untranslatable("messages")
    role = message.get("role")
    content = message.get("content")
    if role == "user":
        return _user_to_openai(content)
    if role == "assistant":
        return [_assistant_to_openai(content)]
    raise Untranslatable(f"messages.role.{role}")


def _user_to_openai(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in _as_list(content, "messages.user"):
        kind = _type_of(block)
        if kind == "tool_result":
            _refuse_cache_control(block)
            tool_messages.append(_tool_result_to_openai(block))
        elif kind == "text":
            parts.append(_anthropic_text(block, "messages.user"))
        elif kind == "image":
            _refuse_cache_control(block)
            parts.append(_image_to_openai(block.get("source")))
        else:
            # document (PDF), search_result, container_upload, ...
            raise Untranslatable(f"messages.user.{kind}")
    # A tool message must directly follow the assistant's tool_calls, so the
    # results go first and the user's own words after them.
    out = tool_messages
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _image_to_openai(source: Any) -> dict[str, Any]:
    kind = _type_of(source)
    if kind == "base64":
        media_type = _str(source.get("media_type"), "messages.user.image.source.media_type")
        data = _str(source.get("data"), "messages.user.image.source.data")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = _str(source.get("url"), "messages.user.image.source.url")
    else:
        raise Untranslatable(f"messages.user.image.source.{kind}")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_to_openai(block: dict[str, Any]) -> dict[str, Any]:
    # is_error has no OpenAI counterpart: the result's text (which says what went
    # wrong) reaches the model as the tool's answer.
    content = block.get("content")
    text: str | list[dict[str, Any]]
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts = [
            _anthropic_text(part, "messages.user.tool_result")
            for part in _as_list(content, "tool_result")
        ]
        text = parts[0]["text"] if len(parts) == 1 else parts
    call_id = _str(block.get("tool_use_id"), "messages.user.tool_result.tool_use_id")
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _assistant_to_openai(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in _as_list(content, "messages.assistant"):
        kind = _type_of(block)
        if kind == "text":
            text = _anthropic_text(block, "messages.assistant")
            if text["text"]:
                texts.append(text)
        elif kind == "tool_use":
            _refuse_cache_control(block)
            call_id = _str(block.get("id"), "messages.assistant.tool_use.id")
            if len(call_id) > _OPENAI_MAX_CALL_ID:
                raise Untranslatable("messages.assistant.tool_use.id")
            arguments = _dict(block.get("input", {}), "messages.assistant.tool_use.input")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": _str(block.get("name"), "messages.assistant.tool_use.name"),
                        "arguments": json.dumps(arguments, ensure_ascii=False),
                    },
                }
            )
        else:
            # thinking / redacted_thinking (signed, OpenAI cannot replay them),
            # server_tool_use, web_search_tool_result, ...
            raise Untranslatable(f"messages.assistant.{kind}")
    out: dict[str, Any] = {"role": "assistant"}
    if not texts:
        out["content"] = None
    elif len(texts) == 1:
        out["content"] = texts[0]["text"]
    else:
        out["content"] = texts
    if calls:
        out["tool_calls"] = calls
    return out


_ANTHROPIC_TOOL_KEYS = frozenset(
    {
        "type",
        "name",
        "description",
        "input_schema",
        "strict",
        "cache_control",
        "eager_input_streaming",
    }
)


def _tool_to_openai(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
        # Anthropic server tools (web_search_…, bash_…, text_editor_…, code_execution_…)
        raise Untranslatable(f"tools.{_type_of(tool)}")
    _refuse_cache_control(tool)
    for key in tool:
        if key not in _ANTHROPIC_TOOL_KEYS:
            # defer_loading, input_examples, allowed_callers, ...: tool-search and
            # programmatic-calling features OpenAI does not have
            raise Untranslatable(f"tools.{key}")
    name = tool.get("name")
    if not isinstance(name, str) or not _OPENAI_TOOL_NAME.fullmatch(name):
        raise Untranslatable("tools.name")
    function: dict[str, Any] = {"name": name}
    if tool.get("description"):
        function["description"] = _str(tool["description"], "tools.description")
    schema = tool.get("input_schema") or {"type": "object", "properties": {}}
    function["parameters"] = _dict(schema, "tools.input_schema")
    if tool.get("strict") is not None:
        function["strict"] = bool(tool["strict"])
    return {"type": "function", "function": function}


def _tool_choice_to_openai(choice: dict[str, Any]) -> str | dict[str, Any]:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        name = _str(choice.get("name"), "tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    raise Untranslatable("tool_choice")


def _as_list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise Untranslatable(field)
    return value
