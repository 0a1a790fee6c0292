"""What the PCI guard's scanner costs per request, on JSON bodies of 1 KiB and 1 MiB.

The bodies are order-like records, number-heavy on purpose: in every ~190
bytes a millisecond timestamp and a 12-digit phone number (digit runs long
enough to be card numbers, which the old scanner took to its Luhn and
brand checks), no card number; then the same with a card at the very end
(the whole body is scanned). Last, the worst case for the current scanner:
a Luhn-failing 16-digit Visa-like number in every record, each of which its
screen lets through to the check. For scale, the time orjson takes to
parse the same body once is printed beside it.

    python bench/pci.py

Timings are the best of several rounds, so that a busy machine shows less.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.pci import find_card_number

ROUNDS = 7


def json_body(size: int, **extra: Any) -> bytes:
    """A JSON array of order-like records, about `size` bytes."""
    record = {
        "id": "ord_8f3a2c91d0",
        "amount": 12950,
        "currency": "eur",
        "created": 1700000000123,
        "phone": "+44 20 7946 0958",
        "items": [{"sku": "SKU-10042", "qty": 2}],
        "note": "deliver after 18:00, gate code 4471",
        **extra,
    }
    one = orjson.dumps(record)
    count = max(1, size // (len(one) + 1))
    return orjson.dumps([record] * count)


def per_call(scan: Callable[[bytes], object], data: bytes, calls: int) -> float:
    """Best of ROUNDS: µs per `scan(data)`."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            scan(data)
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    return best


def main() -> None:
    for label, size, calls in (("1 KiB", 1 << 10, 20000), ("1 MiB", 1 << 20, 20)):
        body = json_body(size)
        with_card = body[:-1] + b',"4111 1111 1111 1111"]'
        assert find_card_number(body) is None
        assert find_card_number(with_card) == len(with_card) - 21
        no_card = per_call(find_card_number, body, calls)
        card_at_end = per_call(find_card_number, with_card, calls)
        parse = per_call(orjson.loads, body, calls)
        print(f"{label} JSON ({len(body)} B): scan, no card     {no_card:10.1f} µs/call")
        print(f"{label} JSON: scan, card at the end     {card_at_end:10.1f} µs/call")
        print(f"{label} JSON: orjson.loads, for scale   {parse:10.1f} µs/call")
    near_misses = json_body(1 << 20, ref="4000123412341235")
    assert find_card_number(near_misses) is None
    worst = per_call(find_card_number, near_misses, 3)
    print(f"1 MiB JSON, a near miss per record:  {worst:10.1f} µs/call")


if __name__ == "__main__":
    main()
