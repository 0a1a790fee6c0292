"""`mirapi routes`: add, list, show, rm, import and export through the real CLI.

Each call is a real `mirapi` process on the test's data dir (the embedded
store's SQLite), or on a private redis-server with `--redis`. Independent
calls run concurrently to keep the tests quick.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.support.cli import run_mirapi


class Run:
    """One finished `mirapi` process."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


async def mirapi(data_dir: Path, *args: str, stdin: str | None = None) -> Run:
    """Run `mirapi ARGS` on `data_dir` with an empty config file."""
    data = None if stdin is None else stdin.encode()
    code, out, err = await run_mirapi(data_dir, *args, stdin=data)
    return Run(code, out.decode(), err)


PAYMENTS = (
    "payments",
    "--endpoint",
    "https://api.stripe.com",
    "--endpoint",
    "https://backup.example/v1",
    "--retry",
    "2",
    "--retry-delay",
    "200ms",
    "--timeout",
    "10s",
    "--smart-cache",
    "5m",
    "--circuit-breaker",
    "--breaker-threshold",
    "3",
    "--secret",
    "stripe",
)
LLM = (
    "llm",
    "--endpoint",
    "https://api.openai.com/v1",
    "--endpoint",
    "https://llm-backup.example/v1",
    "--strategy",
    "race",
    "--deadline",
    "1m",
    "--no-pci-guard",
)

FILE = """\
[routes.stripe]
strategy = "priority"
retry = 2
smart_cache = "off"
secret = "stripe"

[[routes.stripe.endpoints]]
url = "https://api.stripe.com"
timeout = "5s"
headers = { "Stripe-Version" = "2024-06-20" }

[[routes.stripe.endpoints]]
url = "https://backup.example/v1"

[routes.azure]
strategy = "race"
[[routes.azure.endpoints]]
url = "https://x.openai.azure.com/openai"
headers = { "api-version" = "2024-06-01" }
"""


async def test_add_list_show_and_rm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = await mirapi(data, "routes", "add", *PAYMENTS)
    assert added.code == 0, added.err
    assert "payments" in added.out
    assert (await mirapi(data, "routes", "add", *LLM)).code == 0

    listed, shown, human = await asyncio.gather(
        mirapi(data, "routes", "list", "--json"),
        mirapi(data, "routes", "show", "payments", "--json"),
        mirapi(data, "routes", "list"),
    )

    assert listed.json() == [
        {
            "name": "llm",
            "strategy": "race",
            "endpoints": ["https://api.openai.com/v1", "https://llm-backup.example/v1"],
        },
        {
            "name": "payments",
            "strategy": "priority",
            "endpoints": ["https://api.stripe.com", "https://backup.example/v1"],
        },
    ]
    assert shown.json() == {
        "name": "payments",
        "strategy": "priority",
        "endpoints": [
            {"url": "https://api.stripe.com", "headers": {}, "timeout": None, "secret": None},
            {"url": "https://backup.example/v1", "headers": {}, "timeout": None, "secret": None},
        ],
        "defaults": {
            "retry": "2",
            "retry_delay": "200ms",
            "timeout": "10s",
            "smart_cache": "5m",
            "circuit_breaker": "on; threshold=3",
        },
        "secret": "stripe",
        "pci_guard": True,
        "race_writes": False,
        "rate_limit": None,
    }
    assert human.code == 0
    assert "payments" in human.out and "https://llm-backup.example/v1" in human.out

    removed = await mirapi(data, "routes", "rm", "payments")
    assert removed.code == 0, removed.err
    assert [r["name"] for r in (await mirapi(data, "routes", "list", "--json")).json()] == ["llm"]

    again, show_gone, human_show = await asyncio.gather(
        mirapi(data, "routes", "rm", "payments"),
        mirapi(data, "routes", "show", "payments"),
        mirapi(data, "routes", "show", "llm"),
    )
    assert (again.code, again.err) == (1, "mirapi: error: no route named 'payments'\n")
    assert (show_gone.code, show_gone.err) == (1, "mirapi: error: no route named 'payments'\n")
    assert human_show.code == 0
    assert "deadline (X-Deadline)" in human_show.out and "pci guard" in human_show.out


async def test_a_name_taken_is_refused_unless_replace(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (await mirapi(data, "routes", "add", "r", "--endpoint", "https://a.example")).code == 0

    refused = await mirapi(data, "routes", "add", "r", "--endpoint", "https://b.example")
    assert refused.code == 1
    assert "a route named 'r' exists already (use --replace" in refused.err
    assert (await mirapi(data, "routes", "list", "--json")).json()[0]["endpoints"] == [
        "https://a.example"
    ]

    replaced = await mirapi(
        data, "routes", "add", "r", "--endpoint", "https://b.example", "--replace"
    )
    assert replaced.code == 0, replaced.err
    assert (await mirapi(data, "routes", "list", "--json")).json()[0]["endpoints"] == [
        "https://b.example"
    ]


BAD_ADDS = [
    (["--endpoint", "api.example.com"], "endpoint 1: url 'api.example.com': must be an absolute"),
    (["--endpoint", "ftp://files.example"], "url 'ftp://files.example': must be an absolute http"),
    (["--endpoint", "https://a", "--endpoint", "mailto:x"], "endpoint 2: url 'mailto:x'"),
    (["--endpoint", "https://a", "--strategy", "fastest"], "--strategy: 'fastest' is not one of"),
    (
        ["--endpoint", "https://a", "--retry", "11"],
        "--retry: '11' is not a whole number from 0 to 10",
    ),
    (["--endpoint", "https://a", "--timeout", "soon"], "--timeout: 'soon' is not a duration"),
    (["--endpoint", "https://a", "--retry-delay", "5x"], "--retry-delay: '5x' is not a duration"),
    (["--endpoint", "https://a", "--retry-on", "teapot"], "--retry-on: 'teapot' is not one of"),
    (["--endpoint", "https://a", "--smart-cache", "forever"], "--smart-cache: 'forever' is not a"),
    (["--endpoint", "https://a", "--breaker-threshold", "0"], "--circuit-breaker: threshold '0'"),
    (["--endpoint", "https://a", "--secret", "a b"], "--secret: must be the name of a secret"),
    (["--endpoint", "https://a", "--race-writes"], "--race-writes: only means something with"),
    (["--endpoint", "https://u:pw@a.example"], "url: must not hold credentials"),
]


async def test_every_bad_definition_is_refused_and_nothing_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (
        await mirapi(data, "routes", "add", "keep", "--endpoint", "https://a.example")
    ).code == 0
    before = await mirapi(data, "routes", "export")

    runs = await asyncio.gather(
        *(mirapi(data, "routes", "add", "new", *args) for args, _ in BAD_ADDS),
        mirapi(data, "routes", "add", "bad name", "--endpoint", "https://a.example"),
        mirapi(data, "routes", "add", "keep", "--endpoint", "ftp://x", "--replace"),
        mirapi(data, "routes", "add", "new"),
    )

    messages = [message for _, message in BAD_ADDS]
    messages += ["bad route name 'bad name'", "route 'keep': endpoint 1: url 'ftp://x'"]
    for run, message in zip(runs, messages, strict=False):
        assert run.code == 1, (message, run.err)
        assert message in run.err
        assert run.err.startswith("mirapi: error: ") and run.err.count("\n") == 1
        assert "pw@" not in run.err
    no_endpoint = runs[-1]
    assert no_endpoint.code == 2
    assert "--endpoint" in no_endpoint.err
    assert (await mirapi(data, "routes", "export")).out == before.out


async def test_export_import_round_trip_is_byte_identical(tmp_path: Path) -> None:
    source = tmp_path / "source"
    routes_file = tmp_path / "routes.toml"
    routes_file.write_text(FILE)
    imported = await mirapi(source, "routes", "import", str(routes_file))
    assert imported.code == 0, imported.err
    assert "imported 2 routes: stripe, azure" in imported.out

    exported = await mirapi(source, "routes", "export")
    assert exported.code == 0, exported.err
    assert 'headers = { Stripe-Version = "2024-06-20" }' in exported.out

    # Into a fresh store, once from a file and once from stdin.
    copy = tmp_path / "exported.toml"
    copy.write_text(exported.out)
    from_file, from_stdin = await asyncio.gather(
        mirapi(tmp_path / "a", "routes", "import", str(copy)),
        mirapi(tmp_path / "b", "routes", "import", "-", stdin=exported.out),
    )
    assert from_file.code == from_stdin.code == 0, from_file.err + from_stdin.err
    again_a, again_b, one, shown = await asyncio.gather(
        mirapi(tmp_path / "a", "routes", "export"),
        mirapi(tmp_path / "b", "routes", "export"),
        mirapi(tmp_path / "a", "routes", "export", "stripe"),
        mirapi(tmp_path / "a", "routes", "show", "stripe", "--json"),
    )
    assert again_a.out == again_b.out == exported.out
    assert one.out.startswith("[routes.stripe]") and "azure" not in one.out
    assert shown.json()["endpoints"][0] == {
        "url": "https://api.stripe.com",
        "headers": {"Stripe-Version": "2024-06-20"},
        "timeout": "5s",
        "secret": None,
    }
    missing = await mirapi(tmp_path / "a", "routes", "export", "stripe", "nope")
    assert (missing.code, missing.out) == (1, "")
    assert "no route named 'nope'" in missing.err


async def test_an_import_is_all_or_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (
        await mirapi(data, "routes", "add", "stripe", "--endpoint", "https://old.example")
    ).code == 0
    before = (await mirapi(data, "routes", "export")).out
    bad_route = FILE + '\n[routes.broken]\nendpoints = [{ url = "ftp://x" }]\n'

    taken, broken, not_toml, unknown_key, missing = await asyncio.gather(
        mirapi(data, "routes", "import", "-", stdin=FILE),
        mirapi(data, "routes", "import", "-", "--replace", stdin=bad_route),
        mirapi(data, "routes", "import", "-", stdin="[routes.a\n"),
        mirapi(data, "routes", "import", "-", stdin='[routes.a]\nendpoint = "https://a"\n'),
        mirapi(data, "routes", "import", str(tmp_path / "absent.toml")),
    )

    assert taken.code == 1
    assert "route 'stripe' exists already; nothing imported (use --replace" in taken.err
    assert broken.code == 1
    assert "stdin: route 'broken': endpoint 1: url 'ftp://x'" in broken.err
    assert not_toml.code == 1
    assert "stdin: not valid TOML: " in not_toml.err and "line 1" in not_toml.err
    assert unknown_key.code == 1
    assert "route 'a': unknown key 'endpoint'" in unknown_key.err
    assert missing.code == 1
    assert "cannot read " in missing.err
    assert (await mirapi(data, "routes", "export")).out == before

    replaced = await mirapi(data, "routes", "import", "-", "--replace", stdin=FILE)
    assert replaced.code == 0, replaced.err
    listed = (await mirapi(data, "routes", "list", "--json")).json()
    assert [(r["name"], r["endpoints"][0]) for r in listed] == [
        ("azure", "https://x.openai.azure.com/openai"),
        ("stripe", "https://api.stripe.com"),
    ]


async def test_an_empty_store_lists_and_exports_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    listed, human, exported, empty_import = await asyncio.gather(
        mirapi(data, "routes", "list", "--json"),
        mirapi(data, "routes", "list"),
        mirapi(data, "routes", "export"),
        mirapi(tmp_path / "other", "routes", "import", "-", stdin=""),
    )
    assert listed.json() == []
    assert human.out == "" and "no routes" in human.err
    assert (exported.code, exported.out) == (0, "")
    assert empty_import.code == 0
    assert "defines no routes" in empty_import.out


async def test_routes_are_shared_through_redis(tmp_path: Path, redis_url: str) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    added = await mirapi(one, "routes", "add", *PAYMENTS, "--redis", redis_url)
    assert added.code == 0, added.err
    imported = await mirapi(two, "routes", "import", "-", "--redis", redis_url, stdin=FILE)
    assert imported.code == 0, imported.err

    # Another data dir on the same Redis sees both; the embedded store none.
    listed, local, exported = await asyncio.gather(
        mirapi(two, "routes", "list", "--json", "--redis", redis_url),
        mirapi(one, "routes", "list", "--json"),
        mirapi(one, "routes", "export", "--redis", redis_url),
    )
    assert [r["name"] for r in listed.json()] == ["azure", "payments", "stripe"]
    assert local.json() == []

    duplicate = await mirapi(two, "routes", "add", *PAYMENTS, "--redis", redis_url)
    assert duplicate.code == 1
    assert "exists already" in duplicate.err

    removed = await mirapi(two, "routes", "rm", "payments", "--redis", redis_url)
    assert removed.code == 0, removed.err
    back = await mirapi(
        one, "routes", "import", "-", "--replace", "--redis", redis_url, stdin=exported.out
    )
    assert back.code == 0, back.err
    assert (await mirapi(two, "routes", "export", "--redis", redis_url)).out == exported.out


async def test_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    url = f"unix://{tmp_path / 'absent.sock'}"
    runs = await asyncio.gather(
        mirapi(tmp_path / "data", "routes", "list", "--redis", url),
        mirapi(tmp_path / "data", "routes", "add", "r", "--endpoint", "https://a", "--redis", url),
    )
    for run in runs:
        assert run.code == 1
        assert run.err.startswith("mirapi: error: the store is unavailable: ")
        assert run.err.count("\n") == 1


async def test_every_command_takes_the_store_options(tmp_path: Path) -> None:
    commands = ("add", "list", "show", "rm", "import", "export")
    helps = await asyncio.gather(
        *(mirapi(tmp_path / "data", "routes", command, "--help") for command in commands)
    )
    for command, shown in zip(commands, helps, strict=True):
        assert shown.code == 0, command
        for option in ("--data-dir", "--config", "--redis"):
            assert option in shown.out, (command, option)
