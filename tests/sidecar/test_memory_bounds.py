"""Issue 20: every lookup cache stops growing at its byte bound, and the sidecar's
entry does not load what it does not use."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sidecar import bounded, config, policy
from sidecar.outbound import transport, upstream
from sidecar.process import memory
from sidecar.security import gate


@pytest.fixture(autouse=True)
def default_budget() -> Iterator[None]:
    bounded.configure(bounded.DEFAULT_MAX_BYTES)
    yield
    bounded.configure(bounded.DEFAULT_MAX_BYTES)


def test_a_byte_cache_stops_at_its_byte_bound_and_keeps_the_newest() -> None:
    cache: bounded.ByteCache[str, int] = bounded.ByteCache(10_000, bounded.text_cost(1))
    for n in range(5_000):
        cache.put(f"key-{n:06d}", n)
        assert cache.nbytes <= 10_000
    assert cache.get("key-004999") == 4999
    assert cache.get("key-000000") is None
    assert 0 < len(cache) <= 10_000 // bounded.ENTRY_OVERHEAD


def test_one_huge_key_is_not_kept_and_flushes_nothing() -> None:
    cache: bounded.ByteCache[str, int] = bounded.ByteCache(10_000, bounded.text_cost(1))
    cache.put("small", 1)
    cache.put("x" * 5_000, 2)
    assert cache.get("x" * 5_000) is None
    assert cache.get("small") == 1


def test_resizing_to_zero_empties_and_caches_nothing() -> None:
    cache: bounded.ByteCache[str, int] = bounded.ByteCache(10_000, bounded.text_cost(1))
    cache.put("a", 1)
    cache.resize(0)
    cache.put("b", 2)
    assert len(cache) == 0 and cache.nbytes == 0


@pytest.mark.parametrize(
    ("function", "key"),
    [
        (upstream._parsed_url, lambda n: f"http://127.0.0.1:9/{'p' * 300}/{n}?q={n}"),
        (transport._yarl_url, lambda n: f"http://127.0.0.1:9/{'p' * 300}/{n}?q={n}"),
        (policy.url_problem, lambda n: f"http://127.0.0.1:9/{'p' * 300}/{n}"),
        (gate._header_name, lambda n: f"x-custom-{'h' * 200}-{n}".encode()),
        (gate._is_loopback_address, lambda n: f"127.0.{n // 256 % 256}.{n % 256}"),
    ],
    ids=["httpx-url", "yarl-url", "url-problem", "header-name", "client-address"],
)
def test_each_lookup_cache_stops_growing_at_the_configured_bytes(
    function: object, key: object
) -> None:
    """A stream of distinct URLs, header names or clients: the cache holds a budget, not more."""
    cache = function.cache  # type: ignore[attr-defined]
    bounded.configure(64 * 1024)
    for n in range(3_000):
        function(key(n))  # type: ignore[operator]
        assert cache.nbytes <= 64 * 1024
    full = len(cache)
    for n in range(3_000, 4_000):
        function(key(n))  # type: ignore[operator]
    assert len(cache) <= full + 1  # no growth past the bound
    assert function(key(3_999)) == function(key(3_999))  # still answers the same


def test_the_gates_host_cache_is_bounded_by_bytes() -> None:
    door = gate.Gate(dict, ("api.example",))
    for n in range(5_000):
        door._host_allowed(f"{'h' * 200}-{n}.example")
    assert door._hosts.nbytes <= bounded.DEFAULT_MAX_BYTES
    assert door._host_allowed("api.example") is True
    assert door._host_allowed("other.example") is False


def test_the_budget_is_a_config_key_with_a_size_parser() -> None:
    settings = config.load(None, {"MIRAPI_LOOKUP_CACHE_MAX_BYTES": "256KiB"}, {})
    assert settings.lookup_cache_max_bytes == 256 * 1024
    assert config.Settings().lookup_cache_max_bytes == bounded.DEFAULT_MAX_BYTES
    with pytest.raises(config.ConfigError, match="MIRAPI_LOOKUP_CACHE_MAX_BYTES"):
        config.load(None, {"MIRAPI_LOOKUP_CACHE_MAX_BYTES": "lots"}, {})


def test_malloc_tuning_leaves_an_explicit_arena_max_alone() -> None:
    assert memory.tune_malloc({"MALLOC_ARENA_MAX": "4"}) is False


def test_the_memory_report_names_blocks_and_rss() -> None:
    text = memory.report()
    assert "allocated blocks" in text and "RSS" in text


def test_the_sidecar_entry_loads_no_cli_redis_or_crypto() -> None:
    """The served process imports the app and server, and nothing it does not use."""
    code = (
        "import sys\n"
        "import sidecar.app, sidecar.process.server, sidecar.__main__\n"
        "heavy = ('rich', 'typer', 'pydantic', 'redis', 'cryptography', 'pygments',\n"
        "         'tracemalloc')\n"
        "print(' '.join(m for m in heavy if m in sys.modules) or 'none')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "none"


def test_the_lean_entry_reports_a_bad_setting_in_one_line(tmp_path: object) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sidecar", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "MIRAPI_LOOKUP_CACHE_MAX_BYTES": "lots"},
    )
    assert out.returncode == 1
    assert out.stderr.startswith("mirapi: error: MIRAPI_LOOKUP_CACHE_MAX_BYTES:")
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1


def test_malloc_arenas_are_capped_on_glibc() -> None:
    if not sys.platform.startswith("linux") or memory._libc() is None:
        pytest.skip("glibc only")
    assert memory.tune_malloc({}) is True


def test_sigusr2_logs_the_top_allocation_sites_when_tracing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import signal
    import time
    import tracemalloc

    previous = signal.getsignal(signal.SIGUSR2)
    try:
        assert memory.install_from_env({}) is False
        assert memory.install_from_env({memory.TRACE_ENV: "1"}) is True
        with caplog.at_level("WARNING", logger="mirapi"):
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.05)  # the handler runs between bytecodes, at once
        text = caplog.text
        assert "allocated blocks" in text and "top 25 by lineno" in text
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGUSR2, previous)


async def test_breakers_of_distinct_failing_hosts_stop_at_their_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sidecar.store.breaker import BreakerState
    from sidecar.store.memory import MemoryStore
    from sidecar.store.memory import breaker as breakers
    from tests.support.clock import FakeClock

    monkeypatch.setattr(breakers, "MAX_BREAKERS", 8)
    store = MemoryStore(FakeClock().clock())
    # Two open breakers first, then a stream of hosts that fail once each.
    for host in ("open-1", "open-2"):
        await store.breaker_record(host, False, threshold=1)
    for number in range(100):
        await store.breaker_record(f"h{number}.test", False, threshold=5)
    assert len(store._breakers) == 8
    # The closed ones were forgotten first: the open breakers still hold.
    for host in ("open-1", "open-2"):
        assert (await store.breaker_status(host)).state is BreakerState.OPEN
    assert (await store.breaker_status("h99.test")).failures == 1
    assert (await store.breaker_status("h0.test")).failures == 0


async def test_replay_records_stop_at_their_byte_bound_and_keep_the_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sidecar.store.cache import StoredResponse
    from sidecar.store.idempotency import ClaimOutcome
    from sidecar.store.memory import MemoryStore
    from sidecar.store.memory import idempotency as replays
    from tests.support.clock import FakeClock

    monkeypatch.setattr(replays, "REPLAY_MAX_BYTES", 10 * 1024)
    store = MemoryStore(FakeClock().clock())
    answer = StoredResponse(200, (("content-type", "application/json"),), b"x" * 1000, 0.0, 0.0)
    for number in range(50):
        key = f"k:{number}"
        claim = await store.idem_claim(key, "print", "token", 60.0)
        assert claim.outcome is ClaimOutcome.ACQUIRED
        await store.idem_finish(key, "token", answer, keep_until=86_400.0)
    assert store._record_bytes <= 10 * 1024
    assert 5 <= len(store._records) <= 10
    newest = await store.idem_claim("k:49", "print", "other", 60.0)
    assert newest.outcome is ClaimOutcome.COMPLETED
    # The oldest was forgotten: its key is free again.
    oldest = await store.idem_claim("k:0", "print", "other", 60.0)
    assert oldest.outcome is ClaimOutcome.ACQUIRED
