"""LLM calls through the sidecar with the official SDKs (SPEC §10, issue 17).

Usage and cost headers, the unchanged body, the hidden usage chunk, safe
streams (failover before the first content, an in-band error after it),
the failover rules, and Anthropic's key header.
"""

from __future__ import annotations

import asyncio
import json

import anthropic
import openai
import pytest

from tests.llm.conftest import Gateway
from tests.llm.providers import USAGE, cut, error_event, slow, status

OPENAI_ROUTE = """
[routes.chat]
[[routes.chat.endpoints]]
url = "{a}"
provider = "openai"
[[routes.chat.endpoints]]
url = "{b}"
provider = "openai"
"""

ANTHROPIC_ROUTE = """
[routes.claude]
[[routes.claude.endpoints]]
url = "{a}"
provider = "anthropic"
[[routes.claude.endpoints]]
url = "{b}"
provider = "anthropic"
"""

MESSAGES = [{"role": "user", "content": "Say hello"}]


async def openai_route(gateway: Gateway, extra: str = "") -> openai.AsyncOpenAI:
    await gateway.routes(
        OPENAI_ROUTE.format(a=gateway.openai.url, b=gateway.openai_backup.url).replace(
            "[routes.chat]\n", f"[routes.chat]\n{extra}\n"
        )
    )
    return openai.AsyncOpenAI(
        base_url=f"{gateway.url}/r/chat/v1",
        api_key="placeholder",
        max_retries=0,
        http_client=gateway.http(),
    )


async def anthropic_route(gateway: Gateway) -> anthropic.AsyncAnthropic:
    await gateway.routes(
        ANTHROPIC_ROUTE.format(a=gateway.anthropic.url, b=gateway.anthropic_backup.url)
    )
    return anthropic.AsyncAnthropic(
        base_url=f"{gateway.url}/r/claude",
        api_key="placeholder",
        max_retries=0,
        http_client=gateway.http(),
    )


# -- usage, cost, the body ------------------------------------------------------------


async def test_a_json_call_reports_usage_and_cost_and_passes_the_body_unchanged(
    gateway: Gateway,
) -> None:
    client = await openai_route(gateway)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=MESSAGES,
        max_tokens=100,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there"
    assert raw.headers["x-llm-provider"] == "openai"
    assert raw.headers["x-llm-model"] == "gpt-test"
    assert raw.headers["x-llm-usage"] == "input=1000; output=50; cache-read=200; cache-write=0"
    # 800 uncached at 2.5, 200 cached at 1.25, 50 out at 10 (USD per million).
    assert raw.headers["x-llm-cost"] == "0.00275"
    sent = gateway.openai.calls[-1]
    assert sent.json == {"model": "gpt-test", "messages": MESSAGES, "max_tokens": 100}


async def test_an_anthropic_call_reports_its_cache_tokens(gateway: Gateway) -> None:
    client = await anthropic_route(gateway)
    raw = await client.messages.with_raw_response.create(
        model="claude-test",
        max_tokens=100,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert (await raw.parse()).content[0].text == "Hello there"  # type: ignore[union-attr]
    assert raw.headers["x-llm-usage"] == "input=1000; output=50; cache-read=200; cache-write=0"
    # 800 at 3, 200 read at 0.3, 50 out at 15.
    assert raw.headers["x-llm-cost"] == "0.00321"


async def test_a_stream_hides_the_usage_chunk_it_asked_for_and_closes_with_the_figures(
    gateway: Gateway,
) -> None:
    client = await openai_route(gateway)
    async with gateway.http() as http:
        response = await http.post(
            f"{gateway.url}/r/chat/v1/chat/completions",
            json={"model": "gpt-test", "messages": MESSAGES, "stream": True},
        )
    body = response.text
    assert response.headers["x-llm-provider"] == "openai"
    sent = gateway.openai.calls[-1].json
    assert sent["stream_options"] == {"include_usage": True}
    # The client did not ask for usage: no usage-only chunk reaches it.
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    assert all(chunk["choices"] for chunk in chunks)
    comment = next(line for line in body.splitlines() if line.startswith(": mirapi-llm "))
    figures = json.loads(comment[len(": mirapi-llm ") :])
    assert figures["usage"]["output"] == USAGE["output"]
    assert figures["cost_usd"] == pytest.approx(0.00275)
    assert body.rstrip().endswith("data: [DONE]")
    assert body.index(": mirapi-llm") < body.index("data: [DONE]")
    # And the SDK reads such a stream as any other.
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello there"


async def test_a_client_that_asks_for_usage_gets_its_usage_chunk(gateway: Gateway) -> None:
    client = await openai_route(gateway)
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage async for chunk in stream if chunk.usage is not None]
    assert [u.completion_tokens for u in usage] == [USAGE["output"]]


# -- safe streams ------------------------------------------------------------------------


async def test_an_error_event_before_the_first_content_fails_over_unseen(
    gateway: Gateway,
) -> None:
    client = await openai_route(gateway)
    gateway.openai.plan(error_event("server_error"))
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    stream = raw.parse()
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello there"
    assert raw.headers["x-rescued"] == "cascade_fallback"
    assert len(gateway.openai.calls) == 1 and len(gateway.openai_backup.calls) == 1


async def test_anthropic_overloaded_in_the_stream_fails_over_and_get_final_text_works(
    gateway: Gateway,
) -> None:
    client = await anthropic_route(gateway)
    gateway.anthropic.plan(error_event("overloaded_error"))
    async with client.messages.stream(
        model="claude-test",
        max_tokens=100,
        messages=MESSAGES,  # type: ignore[arg-type]
    ) as stream:
        assert await stream.get_final_text() == "Hello there"
    assert len(gateway.anthropic_backup.calls) == 1


async def test_a_stream_cut_after_two_deltas_makes_the_sdk_raise(gateway: Gateway) -> None:
    client = await openai_route(gateway)
    gateway.openai.plan(cut(after=2))
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    # Committed to the first endpoint: the backup was never asked.
    assert gateway.openai_backup.calls == []


async def test_an_anthropic_stream_cut_makes_the_sdk_raise(gateway: Gateway) -> None:
    client = await anthropic_route(gateway)
    gateway.anthropic.plan(cut(after=2))
    with pytest.raises(anthropic.APIError):
        async with client.messages.stream(
            model="claude-test",
            max_tokens=100,
            messages=MESSAGES,  # type: ignore[arg-type]
        ) as stream:
            await stream.get_final_text()


async def test_no_first_content_in_time_fails_over(gateway: Gateway) -> None:
    client = await openai_route(gateway, 'llm_first_token_timeout = "300ms"')
    gateway.openai.plan(slow(1))
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello there"
    assert len(gateway.openai_backup.calls) == 1


# -- failover rules -------------------------------------------------------------------------


async def test_anthropic_529_fails_over(gateway: Gateway) -> None:
    client = await anthropic_route(gateway)
    gateway.anthropic.plan(status(529, "overloaded_error"))
    raw = await client.messages.with_raw_response.create(
        model="claude-test",
        max_tokens=100,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert raw.headers["x-rescued"] == "cascade_fallback"
    assert raw.headers["x-llm-cost"] == "0.00321"


async def test_a_429_is_retried_then_failed_over(gateway: Gateway) -> None:
    client = await openai_route(gateway, 'retry = 1\nretry_delay = "1ms"')
    gateway.openai.plan(status(429, "rate_limit_exceeded"), status(429, "rate_limit_exceeded"))
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert raw.headers["x-rescued"] == "cascade_fallback"
    assert len(gateway.openai.calls) == 2 and len(gateway.openai_backup.calls) == 1


async def test_a_quota_error_moves_on_at_once_and_opens_the_breaker(gateway: Gateway) -> None:
    client = await openai_route(gateway, 'retry = 3\nretry_delay = "1ms"\ncircuit_breaker = "on"')
    gateway.openai.plan(status(429, "insufficient_quota"))
    completion = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.content == "Hello there"
    assert len(gateway.openai.calls) == 1  # no retry of a spent quota
    # Its breaker is open: the next call goes straight to the backup.
    await client.chat.completions.create(model="gpt-test", messages=MESSAGES)  # type: ignore[arg-type]
    assert len(gateway.openai.calls) == 1 and len(gateway.openai_backup.calls) == 2


async def test_a_context_length_error_moves_on_without_retrying(gateway: Gateway) -> None:
    client = await openai_route(gateway, 'retry = 3\nretry_delay = "1ms"')
    gateway.openai.plan(status(400, "context_length_exceeded"))
    await client.chat.completions.create(model="gpt-test", messages=MESSAGES)  # type: ignore[arg-type]
    assert len(gateway.openai.calls) == 1 and len(gateway.openai_backup.calls) == 1


async def test_when_every_endpoint_fails_the_sdk_gets_the_last_real_failure(
    gateway: Gateway,
) -> None:
    client = await openai_route(gateway)
    gateway.openai.plan(status(400, "context_length_exceeded"))
    gateway.openai_backup.plan(status(400, "context_length_exceeded"))
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="gpt-test", messages=MESSAGES)  # type: ignore[arg-type]
    assert raised.value.code == "context_length_exceeded"


# -- Anthropic's key -------------------------------------------------------------------------


async def test_a_stored_secret_goes_to_anthropic_as_x_api_key(gateway: Gateway) -> None:
    from sidecar.security import secrets
    from sidecar.security.vault import Vault

    passphrase = "llm suite passphrase"
    token = await Vault().encrypt(passphrase, "sk-ant-real", "claude")
    secret = secrets.parse_secret("claude", "127.0.0.4", token)
    await gateway.app.store.record_put("secrets", "claude", secrets.encode(secret), True)
    await gateway.app.secrets.refresh()
    client = await anthropic_route(gateway)
    await client.messages.create(
        model="claude-test",
        max_tokens=10,
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={"X-Proxy-Master-Key": passphrase},
    )
    sent = gateway.anthropic.calls[-1].headers
    assert sent["x-api-key"] == "sk-ant-real"
    assert "authorization" not in sent  # the SDK's placeholder never leaves
    assert sent["anthropic-version"]  # the SDK's own, kept


# -- what operators see -------------------------------------------------------------------


async def _events(gateway: Gateway) -> list[dict[str, object]]:
    await gateway.app.events.flush()
    return [json.loads(data) for _, data in await gateway.app.store.events_read(None, 100)]


async def test_a_cut_stream_and_a_failover_are_events(gateway: Gateway) -> None:
    client = await openai_route(gateway)
    gateway.openai.plan(cut(after=1))
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    gateway.openai.plan(status(503, "server_error"))
    await client.chat.completions.create(model="gpt-test", messages=MESSAGES)  # type: ignore[arg-type]
    kinds = {(event["kind"], event.get("reason")) for event in await _events(gateway)}
    assert ("llm_stream_cut", "llm_stream_cut") in kinds
    assert ("llm_failover", "cascade_fallback") in kinds


async def test_tokens_cost_and_time_to_first_token_are_metrics(gateway: Gateway) -> None:
    client = await openai_route(gateway)
    await client.chat.completions.create(model="gpt-test", messages=MESSAGES)  # type: ignore[arg-type]
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    async for _ in stream:
        pass
    labels = 'kind="output",model="gpt-test",provider="openai",route="chat"'
    # The stream's outcome is counted once its last byte is sent: wait for it.
    for _ in range(50):
        async with gateway.http() as http:
            text = (await http.get(f"{gateway.url}/_mirapi/metrics")).text
        if "mirapi_llm_time_to_first_token_seconds_count 1.0" in text:
            break
        await asyncio.sleep(0.02)
    assert f"mirapi_llm_tokens_total{{{labels}}} 100.0" in text
    cost = 'mirapi_llm_cost_usd_total{model="gpt-test",provider="openai",route="chat"}'
    assert f"{cost} 0.0055" in text
    assert "mirapi_llm_time_to_first_token_seconds_count 1.0" in text


async def test_header_mode_names_the_provider_with_x_llm_provider(gateway: Gateway) -> None:
    async with gateway.http() as http:
        response = await http.post(
            f"{gateway.url}/v1/chat/completions",
            headers={
                "X-Target-URL": gateway.openai.url,
                "X-Failover-URL": gateway.openai_backup.url,
                "X-LLM-Provider": "openai",
            },
            json={"model": "gpt-test", "messages": MESSAGES},
        )
        assert response.status_code == 200
        assert response.headers["x-llm-cost"] == "0.00275"
        # Without it, the same call is proxied as any POST: no LLM headers.
        plain = await http.post(
            f"{gateway.url}/v1/chat/completions",
            headers={"X-Target-URL": gateway.openai.url},
            json={"model": "gpt-test", "messages": MESSAGES, "user": "other"},
        )
        assert plain.status_code == 200 and "x-llm-cost" not in plain.headers
        refused = await http.post(
            f"{gateway.url}/v1/chat/completions",
            headers={"X-Target-URL": gateway.openai.url, "X-LLM-Provider": "gemini"},
            json={"model": "gpt-test", "messages": MESSAGES},
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "bad_header"
