"""`mirapi curl` with the stateful stages: cache, breaker and idempotency share the store.

Each call is a real `mirapi` process; state lives in the test's data dir
(embedded store) or a private redis-server shared with a real sidecar.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import Cli, kill_leftover, run_mirapi
from tests.support.redis import RedisServer
from tests.support.upstream import Upstream, reply, start_upstream


async def mirapi(data_dir: Path, *args: str) -> tuple[int, bytes, str]:
    """Run `mirapi ARGS` on `data_dir`; (exit code, stdout bytes, stderr text)."""
    return await run_mirapi(data_dir, *args)


async def test_a_cached_answer_rescues_a_later_call(tmp_path: Path) -> None:
    upstream, runner = await start_upstream()
    upstream.then(reply(200, b'{"v": 1}'))
    url = upstream.url + "/v"
    try:
        code, out, _ = await mirapi(tmp_path, "curl", url, "--smart-cache", "5m")
        assert (code, out) == (0, b'{"v": 1}')
    finally:
        await runner.cleanup()

    code, out, err = await mirapi(tmp_path, "curl", "-i", url, "--smart-cache", "5m")
    assert code == 0, err
    assert out.endswith(b'{"v": 1}')
    assert b"x-rescued: cache" in out.lower()


async def test_an_idempotency_key_replays_across_calls(tmp_path: Path, upstream: Upstream) -> None:
    upstream.then(reply(201, b'{"paid": true}'))
    args = ("curl", "-i", upstream.url + "/pay", "-d", "a=1", "--idempotency-key", "k-9")

    first = await mirapi(tmp_path, *args)
    second = await mirapi(tmp_path, *args)

    assert first[0] == second[0] == 0
    assert second[1].endswith(b'{"paid": true}')
    assert b"idempotent-replayed: true" in second[1].lower()
    assert len(upstream.seen) == 1


async def test_curl_shares_the_breaker_with_a_sidecar_through_redis(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    upstream, runner = await start_upstream()
    upstream.default = reply(503, b"sick")
    config = tmp_path / "config.toml"
    config.write_text("")
    cli = Cli(tmp_path / "sidecar", config)
    try:
        address = cli.start("--allow-private", "--redis", private_redis.url)["address"]
        await _open_breaker(address, upstream.url)
        assert len(upstream.seen) == 2

        code, _, err = await mirapi(
            tmp_path / "cli",
            "curl",
            upstream.url + "/pay",
            "--circuit-breaker",
            "--redis",
            private_redis.url,
        )
        assert code == 1
        assert "circuit" in err.lower()
        assert len(upstream.seen) == 2  # failed fast: no upstream call
    finally:
        cli("sidecar", "stop")
        kill_leftover(cli.state_file)
        await runner.cleanup()


async def _open_breaker(sidecar: str, upstream_url: str) -> None:
    import httpx

    headers = {
        "X-Target-URL": upstream_url + "/pay",
        "X-Circuit-Breaker": "on; threshold=2; cooldown=1m",
    }
    async with httpx.AsyncClient(timeout=20) as http:
        for _ in range(2):
            assert (await http.get(sidecar, headers=headers)).status_code == 503
