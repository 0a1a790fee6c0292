"""The official SDKs, unmodified but for their base URL, through a real sidecar.

openai, anthropic and stripe (path mode, `/r/NAME/...`), requests and httpx
(X-Target-URL and a route), each a plain call and a stream. A stream must
reach the SDK as it is made: its first chunk arrives before the fake
upstream has sent its last one. A stream the upstream cuts must not end
cleanly at the SDK (SPEC §2.9).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import requests
import stripe

from tests.clients.conftest import ApiFakes, Counter, Sidecar, start_sidecar
from tests.clients.fakes import TEXT, AnthropicFake, FakeLoop, OpenAIFake, StripeFake

# One worker runs this module's tests: its module-scoped sidecar (or data
# dir) is made once, not once per worker.
pytestmark = pytest.mark.xdist_group("clients/test_sdks")


@pytest.fixture(scope="module")
def fakes(loop: FakeLoop) -> ApiFakes:
    return ApiFakes.serve(loop)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, fakes: ApiFakes) -> Iterator[Sidecar]:
    with start_sidecar(tmp_path_factory.mktemp("sdks"), fakes.routes()) as sidecar:
        yield sidecar


def openai_client(sidecar: Sidecar, counter: Counter | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=sidecar.url + "/r/chat/v1",
        api_key="x",
        http_client=(counter or Counter()).client(),
    )


def anthropic_client(sidecar: Sidecar) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=sidecar.url + "/r/claude", api_key="x", http_client=Counter().client()
    )


MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say hello"}
]


def assert_incremental(arrived: list[float], sent: list[float]) -> None:
    """The SDK had the first piece before the upstream sent its last chunk."""
    assert len(arrived) == len(TEXT)
    assert sent, "the fake sent no stream"
    assert arrived[0] < sent[-1], (
        f"first piece at {arrived[0]:.3f}, last chunk sent at {sent[-1]:.3f}: buffered"
    )


def test_openai_plain_call(sidecar: Sidecar, chat: OpenAIFake) -> None:
    counter = Counter()
    reply = openai_client(sidecar, counter).chat.completions.create(
        model="gpt-test", messages=MESSAGES
    )

    assert reply.choices[0].message.content == "".join(TEXT)
    assert reply.usage is not None and reply.usage.total_tokens == 8
    assert len(counter.sent) == 1
    [seen] = chat.seen
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert b'"Say hello"' in seen.body


def test_openai_stream_arrives_incrementally(sidecar: Sidecar, chat: OpenAIFake) -> None:
    stream = openai_client(sidecar).chat.completions.create(
        model="gpt-test", messages=MESSAGES, stream=True
    )
    pieces: list[str] = []
    arrived: list[float] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrived.append(time.monotonic())
            pieces.append(chunk.choices[0].delta.content)

    assert pieces == TEXT
    assert_incremental(arrived, chat.sent_at)


def test_openai_stream_cut_by_the_upstream_is_not_a_clean_end(
    sidecar: Sidecar, chat: OpenAIFake
) -> None:
    # Cut after two content chunks: no finish_reason, no [DONE].
    chat.cut_after = 2
    stream = openai_client(sidecar).chat.completions.create(
        model="gpt-test", messages=MESSAGES, stream=True
    )
    pieces: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    assert pieces == TEXT[:2]


def test_anthropic_plain_call(sidecar: Sidecar, claude: AnthropicFake) -> None:
    message = anthropic_client(sidecar).messages.create(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    )

    assert message.content[0].type == "text"
    assert message.content[0].text == "".join(TEXT)
    assert message.usage.output_tokens == 5
    [seen] = claude.seen
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    assert seen.headers["anthropic-version"]


def test_anthropic_stream_arrives_incrementally(sidecar: Sidecar, claude: AnthropicFake) -> None:
    pieces: list[str] = []
    arrived: list[float] = []
    with anthropic_client(sidecar).messages.stream(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        for text in stream.text_stream:
            arrived.append(time.monotonic())
            pieces.append(text)
        final = stream.get_final_message()

    assert pieces == TEXT
    assert final.stop_reason == "end_turn"
    assert_incremental(arrived, claude.sent_at)


def test_stripe_plain_call(sidecar: Sidecar, pay: StripeFake) -> None:
    client = stripe.StripeClient("x", base_addresses={"api": sidecar.url + "/r/pay"})
    charge = client.v1.charges.create(params={"amount": 2000, "currency": "usd"})

    assert (charge.id, charge.amount, charge.currency) == ("ch_fake1", 2000, "usd")
    assert pay.charges == 1
    [seen] = pay.seen
    assert (seen.method, seen.path) == ("POST", "/v1/charges")
    assert seen.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert seen.body == b"amount=2000&currency=usd"
    # The SDK's own key for its retries went upstream unchanged.
    assert seen.headers["idempotency-key"]


def test_requests_plain_calls(sidecar: Sidecar, chat: OpenAIFake) -> None:
    by_target = requests.get(
        sidecar.url + "/items?page=2", headers={"X-Target-URL": chat.url}, timeout=20
    )
    by_route = requests.post(sidecar.url + "/r/chat/items", data={"name": "a b"}, timeout=20)

    assert by_target.status_code == 200
    assert by_target.json() == {"method": "GET", "path": "/items?page=2", "body": ""}
    assert by_route.status_code == 200
    assert by_route.json() == {"method": "POST", "path": "/items", "body": "name=a+b"}
    assert "x-target-url" not in chat.seen[0].headers


def test_httpx_plain_calls(sidecar: Sidecar, chat: OpenAIFake) -> None:
    with httpx.Client(base_url=sidecar.url, timeout=20) as client:
        by_target = client.post("/items", json={"n": 1}, headers={"X-Target-URL": chat.url})
        by_route = client.get("/r/chat/items", params={"q": "x"})

    assert by_target.json() == {"method": "POST", "path": "/items", "body": '{"n":1}'}
    assert by_route.json() == {"method": "GET", "path": "/items?q=x", "body": ""}


def test_requests_stream_arrives_incrementally(sidecar: Sidecar, chat: OpenAIFake) -> None:
    body: dict[str, Any] = {"model": "gpt-test", "messages": MESSAGES, "stream": True}
    arrived: list[float] = []
    with requests.post(
        sidecar.url + "/r/chat/v1/chat/completions", json=body, stream=True, timeout=20
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith(b"data: {") and b'"content"' in line:
                arrived.append(time.monotonic())
    assert_incremental(arrived, chat.sent_at)


def test_httpx_stream_arrives_incrementally(sidecar: Sidecar, chat: OpenAIFake) -> None:
    body: dict[str, Any] = {"model": "gpt-test", "messages": MESSAGES, "stream": True}
    arrived: list[float] = []
    lines: list[str] = []
    with (
        httpx.Client(timeout=20) as client,
        client.stream(
            "POST",
            sidecar.url + "/v1/chat/completions",
            json=body,
            headers={"X-Target-URL": chat.url},
        ) as response,
    ):
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith("data: {") and '"content"' in line:
                arrived.append(time.monotonic())
    assert "data: [DONE]" in lines
    assert_incremental(arrived, chat.sent_at)
