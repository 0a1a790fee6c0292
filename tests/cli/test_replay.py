"""`mirapi replay` through the real CLI entry point: records read from a real
store, sent through a real sidecar (served in this process) to a real upstream.

Records are written straight into the data dir's store here, so these tests
hold whether or not the sidecar records anything; tests/e2e/test_replay.py
covers recording and replaying end to end.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from mirapi_cli.commands.replay import rebuild
from mirapi_cli.errors import CliError
from sidecar.observability.recorder import RequestRecord, encode
from sidecar.store import store_for
from tests.conftest import make_settings
from tests.support.cli import run_mirapi
from tests.support.upstream import Upstream, reply

BODY = b'{"amount":100,"currency":"eur"}'


def a_record(url: str, **changes: object) -> RequestRecord:
    made = RequestRecord(
        request_id="req-1",
        time=1_700_000_000.0,
        method="POST",
        url=url,
        route=None,
        headers=(
            ("content-type", "application/json"),
            ("x-custom", "old"),
            ("x-dropme", "1"),
        ),
        body=BODY,
        status=503,
        rescue=None,
        withheld=("header:authorization",),
    )
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


async def keep(data_dir: Path, *records: RequestRecord, raw: bytes | None = None) -> None:
    """Write `records` into the store on `data_dir`, as the sidecar would."""
    store = store_for(make_settings(data_dir))
    await store.open()
    try:
        items = [(r.request_id, encode(r)) for r in records]
        if raw is not None:
            items.append(("broken", raw))
        await store.requests_put(items)
    finally:
        await store.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    # Not the in-process sidecar's own data dir: the CLI reads only this one.
    return tmp_path / "cli"


async def test_replays_method_url_headers_and_body(
    upstream: Upstream, sidecar_url: str, data_dir: Path
) -> None:
    await keep(data_dir, a_record(f"{upstream.url}/v1/charges?a=1"))
    code, out, err = await run_mirapi(
        data_dir,
        "replay",
        "req-1",
        "--via",
        sidecar_url,
        "-H",
        "X-Custom: new",
        "-H",
        "X-Dropme:",
        "-H",
        "Authorization: Bearer t",
        "-i",
    )
    assert code == 0, err
    [seen] = upstream.seen
    assert (seen.method, seen.path_qs, seen.body) == ("POST", "/v1/charges?a=1", BODY)
    assert seen.headers["x-custom"] == "new"
    assert seen.headers["authorization"] == "Bearer t"
    assert seen.headers["content-type"] == "application/json"
    assert "x-dropme" not in seen.headers
    assert [k for k, _ in seen.raw_headers].count("x-custom") == 1
    assert "authorization" not in err  # given, so no note about it
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    # A new request id, not the recorded one.
    assert b"x-request-id: " in head.lower() and b"req-1" not in head
    assert body == b'{"ok":true}'


async def test_notes_what_the_record_lacks(
    upstream: Upstream, sidecar_url: str, data_dir: Path
) -> None:
    # A DELETE's body is not what it does: sent without it, with a note.
    lacking = a_record(
        f"{upstream.url}/v1/charges",
        method="DELETE",
        body=None,
        withheld=("header:authorization", "query", "body"),
    )
    await keep(data_dir, lacking)
    code, _, err = await run_mirapi(data_dir, "replay", "req-1", "--via", sidecar_url)
    assert code == 0, err
    assert upstream.seen[0].body == b""
    assert "body was not recorded" in err and "--data" in err
    assert "no query string" in err
    assert "authorization was not recorded" in err and "-H" in err

    code, _, err = await run_mirapi(
        data_dir, "replay", "req-1", "--via", sidecar_url, "--data", '{"x":1}'
    )
    assert code == 0, err
    assert upstream.seen[1].body == b'{"x":1}'
    assert "body was not recorded" not in err


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize(
    ("withheld", "why"),
    [
        ("body", "recording was off"),
        ("body_too_large", "over 1 MiB"),
        ("card_number", "card number"),
    ],
)
async def test_a_body_method_without_its_body_is_refused_unless_data_is_given(
    upstream: Upstream, sidecar_url: str, data_dir: Path, method: str, withheld: str, why: str
) -> None:
    # Issue 13: a charge replayed without its body was a charge of nothing.
    lacking = a_record(f"{upstream.url}/v1/charges", method=method, body=None, withheld=(withheld,))
    await keep(data_dir, lacking)
    code, out, err = await run_mirapi(data_dir, "replay", "req-1", "--via", sidecar_url)
    assert code == 2
    assert f"is a {method} whose body was not recorded" in err and why in err
    assert "--data" in err and "Traceback" not in err
    assert out == b"" and upstream.seen == []

    code, out, _ = await run_mirapi(data_dir, "replay", "req-1", "--show")
    assert code == 0
    assert b"a replay needs --data" in b" ".join(out.split())  # the cell may wrap

    code, _, err = await run_mirapi(
        data_dir, "replay", "req-1", "--via", sidecar_url, "--data", "amount=2000"
    )
    assert code == 0, err
    [seen] = upstream.seen
    assert (seen.method, seen.body) == (method, b"amount=2000")


async def test_a_body_method_that_had_no_body_is_replayed_without_one(
    upstream: Upstream, sidecar_url: str, data_dir: Path
) -> None:
    # Recording off, but nothing withheld: the original POST had no body.
    await keep(data_dir, a_record(f"{upstream.url}/v1/ping", body=None, withheld=()))
    code, _, err = await run_mirapi(data_dir, "replay", "req-1", "--via", sidecar_url)
    assert code == 0, err
    [seen] = upstream.seen
    assert (seen.method, seen.body) == ("POST", b"")
    assert "body" not in err
    code, out, _ = await run_mirapi(data_dir, "replay", "req-1", "--show")
    assert code == 0 and b"--data" not in out


async def test_another_method_without_a_body_needs_no_data(
    upstream: Upstream, sidecar_url: str, data_dir: Path
) -> None:
    # -X GET on a recorded POST: the user chose a request without a body.
    await keep(data_dir, a_record(f"{upstream.url}/v1/charges", body=None, withheld=("body",)))
    code, _, err = await run_mirapi(data_dir, "replay", "req-1", "--via", sidecar_url, "-X", "GET")
    assert code == 0, err
    assert upstream.seen[0].method == "GET" and "body was not recorded" in err


async def test_method_and_target_replace_the_recorded_ones(
    upstream: Upstream, sidecar_url: str, data_dir: Path
) -> None:
    await keep(data_dir, a_record(f"{upstream.url}/v1/charges"))
    code, _, err = await run_mirapi(
        data_dir,
        "replay",
        "req-1",
        "--via",
        sidecar_url,
        "-X",
        "put",
        "--target",
        f"{upstream.url}/elsewhere?b=2",
    )
    assert code == 0, err
    [seen] = upstream.seen
    assert (seen.method, seen.path_qs, seen.body) == ("PUT", "/elsewhere?b=2", BODY)


async def test_a_route_record_is_sent_with_x_route_key_and_its_path(
    upstream: Upstream, data_dir: Path
) -> None:
    # --via the upstream itself: it sees exactly what a sidecar would get.
    upstream.default = reply(body=b"seen", headers={"Content-Type": "text/plain"})
    await keep(data_dir, a_record("/v1/charges?a=1", route="pay"))
    code, out, err = await run_mirapi(data_dir, "replay", "req-1", "--via", upstream.url)
    assert code == 0, err
    assert out == b"seen"
    [seen] = upstream.seen
    assert seen.path_qs == "/v1/charges?a=1"
    assert seen.headers["x-route-key"] == "pay"
    assert "x-target-url" not in seen.headers


async def test_sidecar_errors_name_the_header(
    upstream: Upstream, sidecar_url: str, data_dir: Path
) -> None:
    bad = a_record(upstream.url, headers=(("x-retry-count", "lots"),))
    await keep(data_dir, bad)
    code, _, err = await run_mirapi(data_dir, "replay", "req-1", "--via", sidecar_url)
    assert code == 2
    assert "X-Retry-Count" in err and "--retry" not in err
    assert upstream.seen == []


async def test_unknown_id_is_an_error_naming_it(upstream: Upstream, data_dir: Path) -> None:
    await keep(data_dir, a_record(upstream.url))
    code, out, err = await run_mirapi(data_dir, "replay", "nope-42", "--via", upstream.url)
    assert code == 1
    assert "no request record 'nope-42'" in err and "Traceback" not in err
    assert out == b"" and upstream.seen == []


async def test_a_record_that_cannot_be_read_is_an_error(data_dir: Path) -> None:
    await keep(data_dir, raw=b"{not json")
    code, _, err = await run_mirapi(data_dir, "replay", "broken")
    assert code == 1
    assert "'broken' cannot be read" in err and "Traceback" not in err


async def test_needs_a_running_sidecar(upstream: Upstream, data_dir: Path) -> None:
    await keep(data_dir, a_record(upstream.url))
    code, _, err = await run_mirapi(data_dir, "replay", "req-1")
    assert code == 3
    assert "no sidecar is running" in err
    assert upstream.seen == []


async def test_a_record_without_a_target_needs_target(upstream: Upstream, data_dir: Path) -> None:
    await keep(data_dir, a_record("/v1/charges"))
    code, _, err = await run_mirapi(data_dir, "replay", "req-1", "--via", upstream.url)
    assert code == 1
    assert "--target" in err
    code, _, err = await run_mirapi(data_dir, "replay", "req-1", "--target", "ftp://x")
    assert code == 2 and "--target" in err
    assert upstream.seen == []


async def test_show_prints_the_record(data_dir: Path) -> None:
    await keep(data_dir, a_record("https://api.test/v1/charges"))
    code, out, err = await run_mirapi(data_dir, "replay", "req-1", "--show", "--json")
    assert code == 0, err
    shown = orjson.loads(out)
    assert shown["url"] == "https://api.test/v1/charges"
    assert shown["headers"][0] == ["content-type", "application/json"]
    assert shown["withheld"] == ["header:authorization"]
    code, out, _ = await run_mirapi(data_dir, "replay", "req-1", "--show")
    assert code == 0
    assert b"https://api.test/v1/charges" in out and b"31 bytes" in out
    code, _, err = await run_mirapi(data_dir, "replay", "req-1", "--json")
    assert code == 2 and "--show" in err


# --- rebuild, the pure part ---------------------------------------------------------


def test_rebuild_lays_given_headers_over_the_record() -> None:
    call, notes = rebuild(
        a_record("https://api.test/x"),
        [("X-CUSTOM", "new"), ("X-Dropme", ""), ("X-Extra", "1")],
    )
    assert call.headers == [
        ("content-type", "application/json"),
        ("X-Target-URL", "https://api.test/x"),
        ("X-CUSTOM", "new"),
        ("X-Extra", "1"),
    ]
    assert (call.method, call.body, call.route) == ("POST", BODY, None)
    assert notes == [
        "authorization was not recorded (a credential): add it with -H 'authorization: ...'"
    ]


def test_rebuild_with_data_adds_a_content_type_only_when_none() -> None:
    bare = a_record("https://api.test/x", headers=())
    call, _ = rebuild(bare, [], body=b"a=1")
    assert ("Content-Type", "application/x-www-form-urlencoded") in call.headers
    call, _ = rebuild(a_record("https://api.test/x"), [], body=b"a=1")
    assert [n.lower() for n, _ in call.headers].count("content-type") == 1


def test_rebuild_target_replaces_a_route() -> None:
    call, _ = rebuild(a_record("/v1/x", route="pay"), [], target="https://b.test/y")
    assert (call.route, call.url) == (None, "https://b.test/y")
    assert ("X-Target-URL", "https://b.test/y") in call.headers
    assert not any(n == "X-Route-Key" for n, _ in call.headers)


def test_rebuild_refuses_a_record_without_an_upstream() -> None:
    with pytest.raises(CliError, match="--target"):
        rebuild(a_record("/v1/x"), [])


async def test_a_header_beyond_ascii_is_replayed_as_its_utf8_bytes(
    upstream: Upstream, sidecar_url: str, data_dir: Path
) -> None:
    # The sidecar forwards UTF-8 header values byte for byte (docs/headers.md);
    # a replay of such a request must send the same bytes, not fail to encode.
    await keep(data_dir, a_record(f"{upstream.url}/v1/charges", headers=(("User-Agent", "naïve"),)))
    code, _, err = await run_mirapi(
        data_dir, "replay", "req-1", "--via", sidecar_url, "-H", "X-Note: café"
    )
    assert code == 0, err
    [seen] = upstream.seen
    # The test upstream (aiohttp) reads header bytes as UTF-8.
    raw = dict(seen.raw_headers)
    assert (raw["user-agent"], raw["x-note"]) == ("naïve", "café")
