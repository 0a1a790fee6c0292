"""The proxy path over real HTTP: a real sidecar (Hypercorn) and a real upstream."""

from __future__ import annotations

import time

import httpx
import orjson

from tests.support.upstream import Upstream, drop, echo, reply, stream


async def test_forwards_with_joined_path_and_query(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    response = await client.post(
        "/v1/charges?x=1", headers={"X-Target-URL": upstream.url}, content=b"amount=100"
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert upstream.seen[0].path_qs == "/v1/charges?x=1"
    assert upstream.seen[0].method == "POST"
    assert upstream.seen[0].body == b"amount=100"


async def test_root_path_adds_nothing_to_target(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    await client.post("/", headers={"X-Target-URL": f"{upstream.url}/post"})
    assert upstream.seen[0].path_qs == "/post"


async def test_no_target_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/anything")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "no_target"
    assert error["request_id"] == response.headers["x-request-id"]


async def test_binary_body_is_byte_exact(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.default = echo()
    payload = bytes(range(256)) * 1024
    response = await client.put("/blob", headers={"X-Target-URL": upstream.url}, content=payload)
    assert upstream.seen[0].body == payload
    assert response.content == payload


async def test_proxy_headers_never_reach_upstream(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    await client.get(
        "/",
        headers={
            "X-Target-URL": upstream.url,
            "X-Retry-Count": "2",
            "X-Retry-Delay": "10ms",
            "X-Timeout": "5s",
            "X-Deadline": "10s",
            "X-Proxy-Debug": "on",
            "X-MirApi-Key": "k",
            "X-Smart-Whatever": "1",
            "X-Circuit-Breaker": "on",
            "X-Idempotency-TTL": "1",
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "gone",
            "Authorization": "Bearer abc",
        },
    )
    seen = upstream.seen[0].headers
    assert seen["x-custom"] == "kept"
    assert seen["authorization"] == "Bearer abc"
    assert seen["host"] == upstream.url.removeprefix("http://")
    for name in seen:
        assert not name.startswith(
            ("x-mirapi", "x-target", "x-retry", "x-proxy", "x-smart", "x-circuit", "x-idempotency")
        ), name
        assert name not in ("x-timeout", "x-deadline", "x-drop-me")


async def test_request_id_is_kept_or_made(client: httpx.AsyncClient, upstream: Upstream) -> None:
    mine = await client.get("/", headers={"X-Target-URL": upstream.url, "X-Request-ID": "req-42"})
    assert mine.headers["x-request-id"] == "req-42"
    assert upstream.seen[0].headers["x-request-id"] == "req-42"
    made = await client.get("/", headers={"X-Target-URL": upstream.url})
    assert made.headers["x-request-id"] == upstream.seen[1].headers["x-request-id"]
    assert "x-rescued" not in made.headers
    assert not [h for h in made.headers if h.startswith("x-mirapi")]


async def test_flaky_upstream_is_rescued_by_retry(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.then(reply(503), reply(502))
    response = await client.post(
        "/pay",
        headers={"X-Target-URL": upstream.url, "X-Retry-Count": "3", "X-Retry-Delay": "10ms"},
        content=b"{}",
    )
    assert response.status_code == 200
    assert response.headers["x-rescued"] == "retry"
    assert len(upstream.seen) == 3
    keys = {seen.headers["idempotency-key"] for seen in upstream.seen}
    assert len(keys) == 1, "every attempt carries the same Idempotency-Key"


async def test_client_idempotency_key_is_kept(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.then(reply(500))
    await client.post(
        "/",
        headers={
            "X-Target-URL": upstream.url,
            "X-Retry-Count": "1",
            "X-Retry-Delay": "1ms",
            "Idempotency-Key": "mine",
        },
    )
    assert [s.headers["idempotency-key"] for s in upstream.seen] == ["mine", "mine"]


async def test_exhausted_retries_return_upstream_5xx(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.default = reply(503, b"upstream says no", headers={"X-Up": "1"})
    response = await client.get(
        "/", headers={"X-Target-URL": upstream.url, "X-Retry-Count": "2", "X-Retry-Delay": "1ms"}
    )
    assert response.status_code == 503
    assert response.content == b"upstream says no"
    assert response.headers["x-up"] == "1"
    assert "x-rescued" not in response.headers
    assert len(upstream.seen) == 3


async def test_404_is_not_retried(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.default = reply(404)
    response = await client.get(
        "/", headers={"X-Target-URL": upstream.url, "X-Retry-Count": "5", "X-Retry-Delay": "1ms"}
    )
    assert response.status_code == 404
    assert len(upstream.seen) == 1


async def test_retry_after_is_honoured(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.then(reply(429, headers={"Retry-After": "1"}))
    response = await client.get(
        "/", headers={"X-Target-URL": upstream.url, "X-Retry-Count": "1", "X-Retry-Delay": "1ms"}
    )
    assert response.status_code == 200
    gap = upstream.seen[1].at - upstream.seen[0].at
    assert 0.95 <= gap < 3


async def test_retry_after_ms_is_honoured(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.then(reply(503, headers={"retry-after-ms": "300"}))
    await client.get(
        "/", headers={"X-Target-URL": upstream.url, "X-Retry-Count": "1", "X-Retry-Delay": "1ms"}
    )
    assert upstream.seen[1].at - upstream.seen[0].at >= 0.29


async def test_retry_on_limits_conditions(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.then(reply(500), reply(409))
    response = await client.get(
        "/",
        headers={
            "X-Target-URL": upstream.url,
            "X-Retry-Count": "3",
            "X-Retry-Delay": "1ms",
            "X-Retry-On": "409",
        },
    )
    assert response.status_code == 500
    assert len(upstream.seen) == 1


async def test_dropped_connection_retried_then_502(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.default = drop()
    response = await client.get(
        "/", headers={"X-Target-URL": upstream.url, "X-Retry-Count": "2", "X-Retry-Delay": "1ms"}
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert len(upstream.seen) == 3


async def test_dropped_connection_rescued(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.then(drop())
    response = await client.get(
        "/", headers={"X-Target-URL": upstream.url, "X-Retry-Count": "1", "X-Retry-Delay": "1ms"}
    )
    assert response.status_code == 200
    assert response.headers["x-rescued"] == "retry"


async def test_per_attempt_timeout_is_504(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.default = reply(delay=2)
    started = time.monotonic()
    response = await client.get(
        "/",
        headers={
            "X-Target-URL": upstream.url,
            "X-Timeout": "200ms",
            "X-Retry-Count": "1",
            "X-Retry-Delay": "1ms",
        },
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 1.5
    assert len(upstream.seen) == 2


async def test_timeout_then_success_is_rescued(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.then(reply(delay=2))
    response = await client.get(
        "/",
        headers={
            "X-Target-URL": upstream.url,
            "X-Timeout": "200ms",
            "X-Retry-Count": "1",
            "X-Retry-Delay": "1ms",
        },
    )
    assert response.status_code == 200
    assert response.headers["x-rescued"] == "retry"


async def test_deadline_bounds_all_retries(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.default = reply(delay=0.3)
    started = time.monotonic()
    response = await client.get(
        "/",
        headers={
            "X-Target-URL": upstream.url,
            "X-Timeout": "250ms",
            "X-Retry-Count": "10",
            "X-Retry-Delay": "1ms",
            "X-Deadline": "600ms",
        },
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 1.2


async def test_failover_after_primary_retries(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.then(reply(503), reply(503))
    response = await client.get(
        "/v1/x",
        headers={
            "X-Target-URL": f"{upstream.url}/primary",
            "X-Retry-Count": "1",
            "X-Retry-Delay": "1ms",
            "X-Failover-URL": f"{upstream.url}/backup",
        },
    )
    assert response.status_code == 200
    assert response.headers["x-rescued"] == "failover"
    assert [s.path_qs for s in upstream.seen] == ["/primary/v1/x", "/primary/v1/x", "/backup/v1/x"]


async def test_failover_list_in_order(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.then(reply(500), reply(500))
    response = await client.get(
        "/",
        headers={
            "X-Target-URL": f"{upstream.url}/a",
            "X-Failover-URL": f"{upstream.url}/b, {upstream.url}/c",
            "X-Proxy-Debug": "on",
        },
    )
    assert response.status_code == 200
    assert [s.path_qs for s in upstream.seen] == ["/a", "/b", "/c"]
    assert response.headers["x-mirapi-upstream"] == f"{upstream.url}/c"
    assert response.headers["x-mirapi-attempts"] == "3"
    assert "server-timing" in response.headers


async def test_extract_returns_json_pointer(client: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.default = reply(body=orjson.dumps({"data": {"items": [{"id": "a/b"}]}}))
    response = await client.get(
        "/", headers={"X-Target-URL": upstream.url, "X-Extract": "/data/items/0/id"}
    )
    assert response.status_code == 200
    assert response.json() == "a/b"


async def test_extract_missing_pointer_is_502(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    response = await client.get("/", headers={"X-Target-URL": upstream.url, "X-Extract": "/nope"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "extract_failed"


async def test_streaming_first_byte_before_end(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.default = stream([b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"], gap=0.4)
    started = time.monotonic()
    async with client.stream("GET", "/events", headers={"X-Target-URL": upstream.url}) as response:
        chunks = []
        first_at = None
        async for chunk in response.aiter_raw():
            first_at = first_at or time.monotonic() - started
            chunks.append(chunk)
    total = time.monotonic() - started
    assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    assert first_at is not None and first_at < 0.3
    assert total > 1.0


async def test_broken_stream_is_cut_off_visibly(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.default = stream([b"a" * 100, b"b" * 100, b"c" * 100], gap=0.05, break_after=2)
    try:
        async with client.stream(
            "GET", "/", headers={"X-Target-URL": upstream.url, "X-Retry-Count": "3"}
        ) as response:
            assert response.status_code == 200
            async for _ in response.aiter_raw():
                pass
    except httpx.RemoteProtocolError:
        pass
    else:
        raise AssertionError("a broken stream must not end cleanly")
    assert len(upstream.seen) == 1, "no retry after the first byte"


async def test_response_body_not_decompressed(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    import gzip

    packed = gzip.compress(b"hello " * 100)
    upstream.default = reply(
        body=packed, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    )
    async with client.stream(
        "GET", "/", headers={"X-Target-URL": upstream.url, "Accept-Encoding": "gzip"}
    ) as response:
        raw = b"".join([c async for c in response.aiter_raw()])
    assert raw == packed
    assert response.headers["content-encoding"] == "gzip"


async def test_bad_headers_are_400_naming_header(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    cases = {
        "X-Retry-Count": "lots",
        "X-Retry-Delay": "5 parsecs",
        "X-Timeout": "soon",
        "X-Deadline": "0",
        "X-Retry-On": "sometimes",
        "X-Failover-URL": "ftp://example.com",
        "X-Proxy-Debug": "maybe",
        "X-Extract": "no-slash",
    }
    for header, value in cases.items():
        response = await client.get("/", headers={"X-Target-URL": upstream.url, header: value})
        assert response.status_code == 400, header
        error = response.json()["error"]
        assert error["code"] == "bad_header"
        assert header in error["message"]
    bad_target = await client.get("/", headers={"X-Target-URL": "file:///etc/passwd"})
    assert bad_target.json()["error"]["code"] == "bad_header"
    assert upstream.seen == []


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    for path in ("/_mirapi/healthz", "/_mirapi/livez", "/_mirapi/readyz"):
        response = await client.get(path)
        assert response.status_code == 200, path


async def test_small_body_cut_short_is_retried(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    from tests.support.upstream import truncated

    upstream.then(truncated())
    response = await client.get(
        "/", headers={"X-Target-URL": upstream.url, "X-Retry-Count": "1", "X-Retry-Delay": "1ms"}
    )
    assert response.status_code == 200
    assert response.content == b'{"ok":true}'
    assert response.headers["x-rescued"] == "retry"


async def test_a_bug_is_a_json_500_not_a_bare_one(tmp_path: object, upstream: Upstream) -> None:
    from pathlib import Path

    from sidecar.app import Sidecar
    from sidecar.security.egress import EgressPolicy
    from tests.conftest import make_settings
    from tests.support.servers import serving

    app = Sidecar(make_settings(Path(str(tmp_path))), egress=EgressPolicy(allow_private=True))

    async def broken(_: object) -> None:
        raise RuntimeError("a bug")

    app.chain = broken  # type: ignore[assignment]
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/", headers={"X-Target-URL": upstream.url})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
