"""Fuzz the sidecar's door at length: the figure for "no input gets a 500" (issue 14).

The same strategies and property as tests/sidecar/test_fuzz.py (shared in
tests/support/fuzz.py), for many more examples: requests of any shape go
through the sidecar in process (door, policy, the whole chain, observers,
background jobs) to an in-process upstream, with no network. Prints how
many examples ran, the answers by status, and the count of 500s, of
tracebacks in the log and of calls to a host no request named.

    python bench/fuzz.py                     # 10,000 examples
    python bench/fuzz.py --examples 50000 --seed 7

Exit code 1 when any example broke the property, so it can gate a release.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.support.fuzz import Case, Harness, cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=5, help="problems to print in full")
    args = parser.parse_args()

    loop = asyncio.new_event_loop()
    fuzz = Harness()
    loop.run_until_complete(fuzz.start())
    statuses: collections.Counter[str] = collections.Counter()
    problems: list[tuple[Case, list[str]]] = []
    counts = {"examples": 0, "500s": 0, "tracebacks": 0, "other hosts": 0, "failures": 0}

    # Generation only: nothing fails inside, so there is nothing to shrink.
    @seed(args.seed)
    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases())
    def one(case: Case) -> None:
        verdict = loop.run_until_complete(fuzz.run(case))
        counts["examples"] += 1
        statuses[str(verdict.status) if verdict.status is not None else "none"] += 1
        counts["500s"] += verdict.error_500 is not None
        counts["tracebacks"] += len(verdict.tracebacks)
        counts["other hosts"] += len(verdict.other_hosts)
        counts["failures"] += len(verdict.failures)
        if verdict.problems:
            problems.append((case, verdict.problems))

    started = time.monotonic()
    try:
        one()
    finally:
        loop.run_until_complete(fuzz.stop())
        loop.close()
    elapsed = time.monotonic() - started

    print(f"examples: {counts['examples']} in {elapsed:.0f} s (seed {args.seed})")
    print("answers:  " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    print(f"500s: {counts['500s']}")
    print(f"tracebacks in the log: {counts['tracebacks']}")
    print(f"calls to a host no request named: {counts['other hosts']}")
    print(f"the app raised, or never answered a client that stayed: {counts['failures']}")
    for case, found in problems[: args.show]:
        print(f"\n{case}\n  " + "\n  ".join(found))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
