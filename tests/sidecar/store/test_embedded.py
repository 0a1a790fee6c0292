"""What only the embedded store does: survive a restart, bound its memory by
bytes, and keep the disk off the request path.

The behaviour every backend shares is in test_contract.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.errors import StoreUnavailable
from sidecar.store.base import (
    EVENTS_MAX,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    BreakerState,
    ClaimOutcome,
    StoredResponse,
)
from sidecar.store.embedded import EmbeddedStore
from sidecar.store.embedded.sqlite import SCHEMA_VERSION
from tests.support.clock import FakeClock

#: Long enough that only an explicit flush (or close) writes, in these tests.
NEVER = 3600.0


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "mirapi.db"


@pytest.fixture
async def store(path: Path, fake: FakeClock) -> AsyncIterator[EmbeddedStore]:
    backend = EmbeddedStore(path, fake.clock(), 1 << 20, flush_interval=NEVER)
    await backend.open()
    yield backend
    await backend.close()


def entry(fake: FakeClock, body: bytes = b"hello", ttl: float = 300.0) -> StoredResponse:
    return StoredResponse(200, (("content-type", "text/plain"),), body, fake.t, fake.t + ttl)


def rows(path: Path, table: str) -> list[str]:
    """The keys in `table`, read by another connection, as another process would."""
    with sqlite3.connect(path) as conn:
        column = "host" if table == "breaker" else "key"
        return [key for (key,) in conn.execute(f"SELECT {column} FROM {table} ORDER BY rowid")]


def permissions(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_in(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def reopened(path: Path, fake: FakeClock, cache_max_bytes: int = 1 << 20) -> EmbeddedStore:
    again = EmbeddedStore(path, fake.clock(), cache_max_bytes, flush_interval=NEVER)
    await again.open()
    return again


# -- surviving a restart ----------------------------------------------------------


async def test_cache_records_and_breakers_survive_a_restart(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    kept = entry(fake, b"\x00kept\xff", ttl=300)
    await store.cache_put("long", kept)
    await store.cache_put("short", entry(fake, ttl=10))
    assert (await store.idem_claim("k:1", "fp", "tok", 30)).outcome is ClaimOutcome.ACQUIRED
    answer = entry(fake, b'{"id":1}')
    await store.idem_finish("k:1", "tok", answer, keep_until=fake.t + 3600)
    for _ in range(3):
        await store.breaker_record("api.test", False, 3)
    await store.close()

    fake.advance(20)
    again = await reopened(path, fake)
    try:
        assert await again.cache_get("long") == kept
        assert await again.cache_get("short") is None
        replay = await again.idem_claim("k:1", "fp", "tok-2", 30)
        assert (replay.outcome, replay.record) == (ClaimOutcome.COMPLETED, answer)
        assert (await again.idem_claim("k:1", "other", "tok-3", 30)).outcome is (
            ClaimOutcome.MISMATCH
        )
        status = await again.breaker_status("api.test")
        assert (status.state, status.failures) == (BreakerState.OPEN, 3)
        admission = await again.breaker_admit("api.test", 30, 5)
        assert admission.retry_after == pytest.approx(10)
    finally:
        await again.close()


async def test_expired_records_are_not_loaded(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    await store.idem_claim("k:1", "fp", "tok", 30)
    await store.idem_finish("k:1", "tok", entry(fake), keep_until=fake.t + 60)
    await store.close()
    fake.advance(60)
    again = await reopened(path, fake)
    try:
        assert (await again.idem_claim("k:1", "fp", "tok-2", 30)).outcome is ClaimOutcome.ACQUIRED
    finally:
        await again.close()


async def test_locks_in_flight_do_not_survive_a_restart(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    await store.idem_claim("k:1", "fp", "tok", 30)
    await store.close()
    again = await reopened(path, fake)
    try:
        assert (await again.idem_claim("k:1", "fp", "tok-2", 30)).outcome is ClaimOutcome.ACQUIRED
    finally:
        await again.close()


async def test_a_closed_breaker_is_forgotten_on_disk(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    await store.breaker_record("api.test", False, 3)
    await store.flush()
    assert rows(path, "breaker") == ["api.test"]
    await store.breaker_record("api.test", True, 3)
    await store.flush()
    assert rows(path, "breaker") == []


async def test_reloading_keeps_the_newest_entries_within_the_bound(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    for name in ("a", "b", "c"):
        await store.cache_put(name, entry(fake, name.encode() * 1000))
        fake.advance(1)
    await store.close()
    two = 2 * entry(fake, b"x" * 1000).size
    again = await reopened(path, fake, cache_max_bytes=two)
    try:
        assert await again.cache_get("a") is None
        assert (await again.cache_get("b")) is not None
        assert (await again.cache_get("c")) is not None
        await again.flush()
        assert rows(path, "cache") == ["b", "c"]
    finally:
        await again.close()


# -- the memory bound --------------------------------------------------------------


async def test_the_least_recently_used_entry_is_evicted_by_bytes(
    path: Path, fake: FakeClock
) -> None:
    one = entry(fake, b"x" * 1000)
    store = EmbeddedStore(path, fake.clock(), 2 * one.size + 10, flush_interval=NEVER)
    await store.open()
    try:
        await store.cache_put("a", one)
        await store.cache_put("b", one)
        assert await store.cache_get("a") == one  # now b is the least recently used
        await store.cache_put("c", one)
        assert await store.cache_get("b") is None
        assert await store.cache_get("a") == one
        assert await store.cache_get("c") == one
        await store.flush()
        assert sorted(rows(path, "cache")) == ["a", "c"]
    finally:
        await store.close()


async def test_an_entry_over_the_bound_is_not_stored(path: Path, fake: FakeClock) -> None:
    small = entry(fake, b"small")
    store = EmbeddedStore(path, fake.clock(), 1000, flush_interval=NEVER)
    await store.open()
    try:
        await store.cache_put("small", small)
        await store.cache_put("big", entry(fake, b"x" * 1000))
        assert await store.cache_get("big") is None
        # Nothing was evicted to make room for an entry that could never fit.
        assert await store.cache_get("small") == small
    finally:
        await store.close()
    assert rows(path, "cache") == ["small"]


async def test_a_bound_of_zero_caches_nothing(fake: FakeClock) -> None:
    store = EmbeddedStore(None, fake.clock(), 0)
    await store.cache_put("a", entry(fake, b""))
    assert await store.cache_get("a") is None


# -- the disk off the request path ------------------------------------------------------


async def test_cache_put_returns_before_the_row_is_written(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    await store.cache_put("a", entry(fake))
    assert rows(path, "cache") == []
    await store.flush()
    assert rows(path, "cache") == ["a"]


async def test_pending_writes_are_flushed_at_close(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    await store.cache_put("a", entry(fake))
    await store.idem_claim("k:1", "fp", "tok", 30)
    await store.idem_finish("k:1", "tok", entry(fake), keep_until=fake.t + 60)
    assert rows(path, "idempotency") == []
    await store.close()
    assert rows(path, "cache") == ["a"]
    assert rows(path, "idempotency") == ["k:1"]


async def test_writes_go_behind_on_their_own(path: Path, fake: FakeClock) -> None:
    store = EmbeddedStore(path, fake.clock(), 1 << 20, flush_interval=0.01)
    await store.open()
    try:
        await store.cache_put("a", entry(fake))
        for _ in range(200):
            if rows(path, "cache") == ["a"]:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the entry was not written within 2 s")
    finally:
        await store.close()


async def test_expired_rows_are_swept_from_the_file(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    await store.cache_put("short", entry(fake, ttl=10))
    await store.cache_put("long", entry(fake, ttl=3600))
    await store.flush()
    fake.advance(600)  # past the sweep interval
    await store.cache_put("new", entry(fake))
    await store.flush()
    assert rows(path, "cache") == ["long", "new"]


# -- failures -----------------------------------------------------------------------


async def test_a_failing_write_is_reported_and_retried(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE cache RENAME TO cache_away")
    await store.cache_put("a", entry(fake))
    with pytest.raises(StoreUnavailable):
        await store.flush()
    health = store.health()
    assert not health.ok
    assert health.reason is not None and str(path) not in health.reason
    # Requests are still answered from memory.
    assert await store.cache_get("a") is not None
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE cache_away RENAME TO cache")
    await store.flush()
    assert store.health().ok
    assert rows(path, "cache") == ["a"]


async def test_an_unusable_file_fails_open_without_showing_the_path(
    tmp_path: Path, fake: FakeClock
) -> None:
    path = tmp_path / "missing-dir" / "mirapi.db"
    store = EmbeddedStore(path, fake.clock())
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert "missing-dir" not in caught.value.message
    await store.close()


async def test_the_file_is_private_to_its_owner(store: EmbeddedStore, path: Path) -> None:
    assert permissions(path) == 0o600


async def test_without_a_path_it_is_memory_only(fake: FakeClock, tmp_path: Path) -> None:
    store = EmbeddedStore(None, fake.clock())
    await store.open()
    await store.cache_put("a", entry(fake))
    assert await store.cache_get("a") is not None
    assert store.health().backend == "embedded"
    await store.close()
    assert files_in(tmp_path) == []


# -- waiting -------------------------------------------------------------------------


async def test_a_waiter_wakes_at_the_finish_not_at_the_next_clock_check(
    store: EmbeddedStore, fake: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sidecar.store.memory.idempotency.EXPIRY_CHECK", 30.0)
    await store.idem_claim("k:1", "fp", "tok-a", 30)
    assert (await store.idem_claim("k:1", "fp", "tok-b", 30)).outcome is ClaimOutcome.IN_FLIGHT
    waiter = asyncio.create_task(store.idem_wait("k:1", "tok-a", 10))
    await asyncio.sleep(0.02)
    await store.idem_finish("k:1", "tok-a", None, keep_until=None)
    async with asyncio.timeout(0.5):
        assert (await waiter).response is None


# -- routes: durable, not written behind -------------------------------------------

#: The schema the first embedded store wrote (user_version 1), before routes.
SCHEMA_V1 = """
CREATE TABLE cache (key TEXT PRIMARY KEY, expires_at REAL NOT NULL, entry BLOB NOT NULL);
CREATE INDEX cache_expires_at ON cache (expires_at);
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, keep_until REAL NOT NULL,
    response BLOB NOT NULL
);
CREATE INDEX idempotency_keep_until ON idempotency (keep_until);
CREATE TABLE breaker (
    host TEXT PRIMARY KEY, state TEXT NOT NULL, failures INTEGER NOT NULL,
    opened_at REAL NOT NULL, saved_at REAL NOT NULL
);
PRAGMA user_version = 1;
"""


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


def stored_routes(path: Path) -> dict[str, bytes]:
    """The routes table, read by another connection, as another process would."""
    with sqlite3.connect(path) as conn:
        return {
            name: data
            for name, data in conn.execute("SELECT name, data FROM records WHERE kind = 'routes'")
        }


async def test_a_route_write_is_committed_when_it_returns(store: EmbeddedStore, path: Path) -> None:
    # The write-behind never runs in these tests (NEVER): routes do not wait for it.
    await store.record_put("routes", "payments", b"route", replace=False)
    assert stored_routes(path) == {"payments": b"route"}
    await store.record_delete("routes", "payments")
    assert stored_routes(path) == {}


async def test_routes_survive_a_restart(store: EmbeddedStore, path: Path, fake: FakeClock) -> None:
    await store.record_put("routes", "payments", b"route", replace=False)
    version = await store.records_version("routes")
    await store.close()
    again = await reopened(path, fake)
    try:
        assert await again.records_load("routes") == (version, {"payments": b"route"})
    finally:
        await again.close()


async def test_a_file_from_before_routes_is_migrated_in_place(path: Path, fake: FakeClock) -> None:
    kept = entry(fake, b"from v1")
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_V1)
        conn.execute(
            "INSERT INTO cache (key, expires_at, entry) VALUES (?, ?, ?)",
            ("old", kept.expires_at, kept.encode()),
        )
    store = await reopened(path, fake)
    try:
        assert await store.cache_get("old") == kept
        assert await store.records_load("routes") == (0, {})
        assert await store.record_put("routes", "payments", b"route", replace=False)
        assert user_version(path) == SCHEMA_VERSION
    finally:
        await store.close()
    # Opening the migrated file again changes nothing.
    again = await reopened(path, fake)
    try:
        assert (await again.records_load("routes"))[1] == {"payments": b"route"}
    finally:
        await again.close()


async def test_a_file_from_a_newer_mirapi_is_refused(path: Path, fake: FakeClock) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = EmbeddedStore(path, fake.clock())
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert "newer" in caught.value.message
    assert str(path.parent) not in caught.value.message
    assert user_version(path) == SCHEMA_VERSION + 1
    await store.close()


async def test_a_failing_route_write_raises_and_writes_nothing(
    store: EmbeddedStore, path: Path
) -> None:
    await store.record_put("routes", "kept", b"1", replace=False)
    version = await store.records_version("routes")
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE meta RENAME TO meta_away")  # the version bump will fail
    with pytest.raises(StoreUnavailable) as caught:
        await store.record_put("routes", "payments", b"route", replace=False)
    assert str(path.parent) not in caught.value.message
    with pytest.raises(StoreUnavailable):
        await store.record_delete("routes", "kept")
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE meta_away RENAME TO meta")
    # Rolled back whole: no route without its version bump.
    assert await store.records_load("routes") == (version, {"kept": b"1"})


async def test_route_calls_on_a_store_not_open_raise(path: Path, fake: FakeClock) -> None:
    store = EmbeddedStore(path, fake.clock())
    with pytest.raises(StoreUnavailable):
        await store.record_put("routes", "payments", b"route", replace=False)
    with pytest.raises(StoreUnavailable):
        await store.records_version("routes")


async def test_routes_stored_before_records_are_kept_by_the_migration(
    path: Path, fake: FakeClock
) -> None:
    # A file at schema 3 kept routes in their own table; schema 4 moves them.
    store = await reopened(path, fake)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE records")
        conn.execute("CREATE TABLE routes (name TEXT PRIMARY KEY, data BLOB NOT NULL)")
        conn.execute("INSERT INTO routes VALUES ('payments', x'00ff')")
        conn.execute("UPDATE meta SET value = 7 WHERE key = 'routes_version'")
        conn.execute("PRAGMA user_version = 3")
    again = await reopened(path, fake)
    try:
        assert await again.records_load("routes") == (7, {"payments": b"\x00\xff"})
        assert await again.records_load("keys") == (0, {})
    finally:
        await again.close()
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "routes" not in tables


async def test_routes_version_does_not_wait_for_a_write_in_another_process(
    store: EmbeddedStore, path: Path
) -> None:
    await store.record_put("routes", "payments", b"route", replace=False)
    version = await store.records_version("routes")
    # Another process in the middle of a write transaction (WAL: readers go on).
    with sqlite3.connect(path, isolation_level=None) as writer:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM records")
        async with asyncio.timeout(0.5):
            assert await store.records_version("routes") == version
            assert (await store.records_load("routes"))[1] == {"payments": b"route"}
        writer.execute("ROLLBACK")


async def test_without_a_path_routes_live_in_memory(fake: FakeClock, tmp_path: Path) -> None:
    store = EmbeddedStore(None, fake.clock())
    await store.open()
    assert await store.record_put("routes", "payments", b"route", replace=False)
    assert (await store.records_load("routes"))[1] == {"payments": b"route"}
    await store.close()
    assert files_in(tmp_path) == []


def test_many_processes_may_create_one_new_file_at_once(tmp_path: Path) -> None:
    # A sidecar starting while `mirapi routes` commands run: each opens the
    # same new file, and every one must get a migrated database.
    import concurrent.futures

    from sidecar.store.embedded.database import Database

    for attempt in range(5):
        path = tmp_path / f"fresh{attempt}.db"

        def open_and_close(path: Path = path) -> None:
            database = Database(path)
            database.open()
            database.close()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for future in [pool.submit(open_and_close) for _ in range(8)]:
                future.result(timeout=30)


# -- observability: events, request records, stats, rate limits -----------------------


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        (rows_in,) = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    return int(rows_in)


async def test_another_store_on_the_file_sees_events_records_and_stats(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    hour = int(fake.t // 3600)
    # The write-behind never runs here (NEVER): these writes do not wait for it.
    await store.events_add([b"e1", b"e2"])
    await store.requests_put([("req-1", b"record")])
    await store.stats_add(hour, {"requests": 3})
    # As `mirapi events tail`, `replay` or `stats` would, from another process.
    cli = await reopened(path, fake)
    try:
        seen = await cli.events_read(None, 10)
        assert [data for _, data in seen] == [b"e1", b"e2"]
        assert await cli.request_get("req-1") == b"record"
        assert await cli.stats_read(hour) == {"requests": 3}

        # And it follows what the sidecar writes next.
        await store.events_add([b"e3"])
        assert [data for _, data in await cli.events_read(seen[-1][0], 10)] == [b"e3"]
    finally:
        await cli.close()


async def test_observability_writes_are_committed_when_they_return(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    await store.events_add([b"e%d" % i for i in range(EVENTS_MAX + 3)])
    await store.requests_put([(f"r{i}", b"x") for i in range(REQUESTS_MAX + 2)])
    await store.stats_add(int(fake.t // 3600), {"requests": 1, "rescued:retry": 1})

    # Trimmed in the same transaction: the file holds only the bound.
    assert count(path, "events") == EVENTS_MAX
    assert count(path, "requests") == REQUESTS_MAX
    assert count(path, "stats") == 2


async def test_event_cursors_keep_rising_across_a_restart(path: Path, fake: FakeClock) -> None:
    store = await reopened(path, fake)
    await store.events_add([b"before"])
    [(cursor, _)] = await store.events_read(None, 1)
    await store.close()
    again = await reopened(path, fake)
    try:
        await again.events_add([b"after"])
        later = await again.events_read(cursor, 10)
        assert [data for _, data in later] == [b"after"]
        assert int(later[0][0]) > int(cursor)
    finally:
        await again.close()


async def test_a_file_at_schema_4_gains_the_observability_tables(
    path: Path, fake: FakeClock
) -> None:
    store = await reopened(path, fake)
    await store.record_put("routes", "payments", b"route", replace=False)
    await store.close()
    with sqlite3.connect(path) as conn:
        for table in ("events", "requests", "stats"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("PRAGMA user_version = 4")

    again = await reopened(path, fake)
    try:
        await again.events_add([b"e1"])
        await again.requests_put([("req-1", b"record")])
        assert [data for _, data in await again.events_read(None, 5)] == [b"e1"]
        assert await again.request_get("req-1") == b"record"
        assert (await again.records_load("routes"))[1] == {"payments": b"route"}
    finally:
        await again.close()
    assert user_version(path) == SCHEMA_VERSION


async def test_a_failing_event_write_raises_without_the_path(
    store: EmbeddedStore, path: Path
) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE events RENAME TO events_away")
    with pytest.raises(StoreUnavailable) as caught:
        await store.events_add([b"e1"])
    assert str(path.parent) not in caught.value.message
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE events_away RENAME TO events")
    await store.events_add([b"e2"])
    assert [data for _, data in await store.events_read(None, 5)] == [b"e2"]


async def test_stats_past_the_keep_are_deleted_from_the_file(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    fake.t = 1_700_000_000.0
    hour = int(fake.t // 3600)
    await store.stats_add(hour, {"requests": 1})
    await store.stats_add(hour + 1, {"requests": 1})
    assert count(path, "stats") == 2

    fake.advance((STATS_KEEP_HOURS + 1) * 3600)  # `hour` is now past the keep, `hour + 1` not
    await store.stats_add(hour + STATS_KEEP_HOURS + 1, {"requests": 1})
    assert count(path, "stats") == 2
    assert await store.stats_read(0) == {"requests": 2}


async def test_rate_buckets_stay_in_this_process(
    store: EmbeddedStore, path: Path, fake: FakeClock
) -> None:
    assert (await store.rate_take("client-a", 1, 60.0)).allowed
    assert not (await store.rate_take("client-a", 1, 60.0)).allowed
    # One sidecar per data dir: a command opening the file has buckets of its own.
    cli = await reopened(path, fake)
    try:
        assert (await cli.rate_take("client-a", 1, 60.0)).allowed
    finally:
        await cli.close()
    assert "rate" not in " ".join(stored_tables(path))


def stored_tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [name for (name,) in conn.execute("SELECT name FROM sqlite_master")]


async def test_without_a_path_observability_lives_in_memory(
    fake: FakeClock, tmp_path: Path
) -> None:
    store = EmbeddedStore(None, fake.clock())
    await store.open()
    await store.events_add([b"e1"])
    await store.requests_put([("req-1", b"record")])
    await store.stats_add(int(fake.t // 3600), {"requests": 2})
    assert [data for _, data in await store.events_read(None, 5)] == [b"e1"]
    assert await store.request_get("req-1") == b"record"
    assert await store.stats_read(0) == {"requests": 2}
    await store.close()
    assert files_in(tmp_path) == []
