"""The logs capability (events, request records, stats), the same on every
backend (conftest `store`: memory, embedded, a private redis-server, the
resilient store on it), all on the fake clock (SPEC §7, §8).

What is pinned here is what the commands and the flushers build on: the
event log read oldest first, newest `limit` or after a cursor, bounded at
EVENTS_MAX; request records replaced by id and bounded at REQUESTS_MAX;
stats counters summed over hour buckets from `since_hour`. (Under the
resilient store with Redis lost the writes go to local state and the reads
raise: `test_resilient.py`.)
"""

from __future__ import annotations

import pytest

from sidecar.store.base import (
    EVENTS_MAX,
    REQUESTS_MAX,
    STATS_KEEP_HOURS,
    Store,
)
from tests.support.clock import FakeClock

#: Opaque bytes: kept exactly, a NUL and invalid UTF-8 too.
BINARY = b'{"kind":"retry"}\x00\xff\xfe\n'
#: A realistic wall clock (2023-11-14), so hour buckets far in the past exist.
NOW = 1_700_000_000.0
HOUR = int(NOW // 3600)


def data(events: list[tuple[str, bytes]]) -> list[bytes]:
    return [payload for _, payload in events]


# -- events -----------------------------------------------------------------------


async def test_a_new_store_has_no_events(store: Store) -> None:
    assert await store.events_read(None, 10) == []


async def test_the_newest_events_come_oldest_first(store: Store) -> None:
    await store.events_add([b"e1", b"e2"])
    await store.events_add([b"e3", BINARY])

    assert data(await store.events_read(None, 2)) == [b"e3", BINARY]
    assert data(await store.events_read(None, 100)) == [b"e1", b"e2", b"e3", BINARY]


async def test_reading_after_a_cursor_gives_exactly_the_later_events(store: Store) -> None:
    await store.events_add([b"e1", b"e2", b"e3", b"e4"])
    cursors = [cursor for cursor, _ in await store.events_read(None, 10)]
    assert len(set(cursors)) == 4

    assert data(await store.events_read(cursors[0], 10)) == [b"e2", b"e3", b"e4"]
    assert data(await store.events_read(cursors[1], 1)) == [b"e3"]  # at most `limit`
    assert await store.events_read(cursors[-1], 10) == []
    # The cursors read after one are the same as read from the newest.
    assert await store.events_read(cursors[1], 10) == (await store.events_read(None, 10))[2:]


async def test_following_the_log_sees_each_new_event_once(store: Store) -> None:
    await store.events_add([b"old"])
    (last, _), *_ = await store.events_read(None, 1)
    seen: list[bytes] = []
    for batch in ([b"a", b"b"], [], [b"c"]):
        await store.events_add(batch)
        new = await store.events_read(last, 100)
        if new:
            last = new[-1][0]
        seen += data(new)
    assert seen == [b"a", b"b", b"c"]
    assert await store.events_read(last, 100) == []


async def test_no_events_are_read_for_a_limit_of_zero(store: Store) -> None:
    await store.events_add([b"e1"])
    assert await store.events_read(None, 0) == []
    assert await store.events_read(None, -1) == []


async def test_a_cursor_of_another_kind_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await store.events_read("not a cursor", 10)


async def test_the_log_keeps_the_newest_events_max(store: Store) -> None:
    total = EVENTS_MAX + 5
    await store.events_add([b"first"])
    (first, _), *_ = await store.events_read(None, 1)
    for start in range(1, total, 2000):
        await store.events_add([b"%d" % i for i in range(start, min(start + 2000, total))])

    kept = await store.events_read(None, EVENTS_MAX + 100)

    assert len(kept) == EVENTS_MAX
    assert data(kept[:2]) == [b"5", b"6"]
    assert kept[-1][1] == b"%d" % (total - 1)
    # A cursor whose event was dropped still reads on from the oldest kept.
    assert data(await store.events_read(first, 2)) == [b"5", b"6"]


# -- request records ----------------------------------------------------------------


async def test_a_request_record_is_found_by_its_id(store: Store) -> None:
    await store.requests_put([("req-1", BINARY), ("req-2", b"second")])

    assert await store.request_get("req-1") == BINARY
    assert await store.request_get("req-2") == b"second"
    assert await store.request_get("req-3") is None


async def test_a_record_with_the_same_id_replaces_the_old_one(store: Store) -> None:
    await store.requests_put([("req-1", b"first")])
    await store.requests_put([("req-1", b"second")])
    await store.requests_put([("req-2", b"x"), ("req-2", b"y")])  # in order, within a batch

    assert await store.request_get("req-1") == b"second"
    assert await store.request_get("req-2") == b"y"


async def test_the_newest_requests_max_records_are_kept(store: Store) -> None:
    await store.requests_put([(f"r{i}", b"%d" % i) for i in range(REQUESTS_MAX)])
    # Replaced, r0 becomes the newest: r1 and r2 are now the oldest.
    await store.requests_put([("r0", b"again")])
    await store.requests_put([("new-1", b"n1"), ("new-2", b"n2")])

    assert await store.request_get("r0") == b"again"
    assert await store.request_get("r1") is None
    assert await store.request_get("r2") is None
    assert await store.request_get("r3") == b"3"
    assert await store.request_get("new-2") == b"n2"


# -- stats --------------------------------------------------------------------------


async def test_stats_are_summed_over_the_hours_since(store: Store, fake: FakeClock) -> None:
    fake.t = NOW
    await store.stats_add(HOUR, {"requests": 2, "rescued:retry": 1})
    await store.stats_add(HOUR, {"requests": 3, "capital:usd": 2000})
    await store.stats_add(HOUR - 1, {"requests": 10, "capital:usd": 500, "capital:eur": 700})
    await store.stats_add(HOUR - 5, {"requests": 100})

    assert await store.stats_read(HOUR) == {"requests": 5, "rescued:retry": 1, "capital:usd": 2000}
    assert await store.stats_read(HOUR - 1) == {
        "requests": 15,
        "rescued:retry": 1,
        "capital:usd": 2500,
        "capital:eur": 700,
    }
    assert (await store.stats_read(HOUR - 5))["requests"] == 115
    assert await store.stats_read(HOUR + 2) == {}


async def test_a_zero_counts_nothing_and_a_negative_is_refused(
    store: Store, fake: FakeClock
) -> None:
    fake.t = NOW
    await store.stats_add(HOUR, {"requests": 1, "rescued:cache": 0})
    await store.stats_add(HOUR, {})
    with pytest.raises(ValueError, match="rescued:retry"):
        await store.stats_add(HOUR, {"rescued:retry": -1})

    assert await store.stats_read(HOUR) == {"requests": 1}


async def test_stats_older_than_the_keep_are_not_read(store: Store, fake: FakeClock) -> None:
    fake.t = NOW
    await store.stats_add(HOUR - STATS_KEEP_HOURS - 1, {"requests": 1000})
    await store.stats_add(HOUR - STATS_KEEP_HOURS, {"requests": 10})
    await store.stats_add(HOUR, {"requests": 1})

    assert await store.stats_read(0) == {"requests": 11}
