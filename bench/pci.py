"""What the PCI guard's scanner costs per request, on JSON bodies of 1 KiB and 1 MiB.

The bodies are order-like records, number-heavy on purpose: in every ~190
bytes a millisecond timestamp and a 12-digit phone number (the phone
reaches the Luhn and brand checks), no card number; then the same with a
card at the very end (the whole body is scanned). For scale, the time
orjson takes to parse the same body once is printed beside it.

    python bench/pci.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.pci import find_card_number


def json_body(size: int) -> bytes:
    """A JSON array of order-like records, about `size` bytes."""
    record = {
        "id": "ord_8f3a2c91d0",
        "amount": 12950,
        "currency": "eur",
        "created": 1700000000123,
        "phone": "+44 20 7946 0958",
        "items": [{"sku": "SKU-10042", "qty": 2}],
        "note": "deliver after 18:00, gate code 4471",
    }
    one = orjson.dumps(record)
    count = max(1, size // (len(one) + 1))
    return orjson.dumps([record] * count)


def per_call(scan: Callable[[bytes], object], data: bytes, calls: int) -> float:
    """Best of three: µs per `scan(data)`."""
    best = float("inf")
    for _ in range(3):
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
        assert find_card_number(with_card) is not None
        no_card = per_call(find_card_number, body, calls)
        card_at_end = per_call(find_card_number, with_card, calls)
        parse = per_call(orjson.loads, body, calls)
        print(f"{label} JSON ({len(body)} B): scan, no card     {no_card:10.1f} µs/call")
        print(f"{label} JSON: scan, card at the end     {card_at_end:10.1f} µs/call")
        print(f"{label} JSON: orjson.loads, for scale   {parse:10.1f} µs/call")


if __name__ == "__main__":
    main()
