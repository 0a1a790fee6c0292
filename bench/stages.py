"""What each pipeline stage costs, in process: parse + chain CPU per request.

The terminal answers a small 200 at once (no network), so the figures are
the pipeline's own Python cost on top of the server and the upstream call;
`bench/run.py` measures the whole path. With `--redis URL` the stateful
stages talk to that Redis (start a private one; never a shared server).

    python bench/stages.py                 # embedded store
    python bench/stages.py --redis unix:///tmp/r.sock
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.clock import SYSTEM_CLOCK
from sidecar.exchange import Exchange, Response
from sidecar.pipeline import Parts, build, standard_stages
from sidecar.policy import parse_policy
from sidecar.store.base import Store

CASES = {
    "plain": {},
    "X-Smart-Cache: 5m": {"x-smart-cache": "5m"},
    "X-Smart-Cache: 5m; serve-fresh (hit)": {"x-smart-cache": "5m; serve-fresh"},
    "X-Circuit-Breaker: on": {"x-circuit-breaker": "on"},
    "cache + breaker": {"x-smart-cache": "5m", "x-circuit-breaker": "on"},
    "X-Retry-Count: 3 (no retry needed)": {"x-retry-count": "3"},
}


async def _answer(_: Exchange) -> Response:
    body = b'{"ok":true}'
    return Response(200, [("content-type", "application/json")], body)


async def measure(store: Store, requests: int, method: str) -> None:
    parts = Parts(store=store, max_body=10 << 20, cache_entry_limit=10 << 20)
    chain = build(standard_stages(parts), _answer)
    cases = dict(CASES)
    if method == "POST":
        cases["X-Proxy-Idempotency-Key (replayed)"] = {"x-proxy-idempotency-key": "bench"}
    for label, extra in cases.items():
        first = {"x-target-url": "http://127.0.0.1:9/x", **extra}
        headers = list(first.items())
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(requests):
                policy = parse_policy(first)
                await chain(Exchange(method, "/", "", headers, b"a=1", policy, "rid"))
            best = min(best, (time.perf_counter() - started) / requests * 1e6)
        print(f"{method:5s} {label:40s} {best:7.1f} µs/request")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", metavar="URL", help="use this (private) Redis")
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    store: Store
    if args.redis:
        from sidecar.store.redis import RedisStore

        store = RedisStore(args.redis, SYSTEM_CLOCK)
    else:
        from sidecar.store.embedded import EmbeddedStore

        store = EmbeddedStore(Path(tempfile.mkdtemp()) / "bench.db", SYSTEM_CLOCK)
    await store.open()
    try:
        for method in ("GET", "POST"):
            await measure(store, args.requests, method)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
