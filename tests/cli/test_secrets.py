"""`mirapi secrets`: add, list, rm, encrypt and rotate-passphrase through the real CLI.

Each call is a real `mirapi` process on the test's data dir; the value goes
in on stdin and the passphrase in $MIRAPI_MASTER_KEY, as a script would.
Every process derives keys at the real (OWASP) cost, about half a second
each, so independent calls run concurrently and the tests stay few.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

from sidecar.config import Settings
from sidecar.security.secrets import KIND, decode
from sidecar.security.vault import Vault
from sidecar.store import store_for
from tests.support.cli import REPO, run_cli

PASSPHRASE = "correct horse battery"
VALUE = "sk_live_CliTestValue123"


class Run:
    """One finished `mirapi` process."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


async def mirapi(
    data_dir: Path, *args: str, stdin: str = "", master: str | None = PASSPHRASE, **env: str
) -> Run:
    """Run `mirapi ARGS` on `data_dir`: empty config, no Redis, no terminal."""
    config = data_dir.parent / "config.toml"
    config.write_text("")
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NO_COLOR": "1",
        "MIRAPI_DATA_DIR": str(data_dir),
        "MIRAPI_CONFIG": str(config),
        **env,
    }
    for name in ("MIRAPI_REDIS", "MIRAPI_MASTER_KEY", "MIRAPI_NEW_MASTER_KEY"):
        if name not in env:
            environment.pop(name, None)
    if master is not None:
        environment["MIRAPI_MASTER_KEY"] = master
    # In this process where that is the same (`run_cli`); `sidecar start` is a process.
    done = await asyncio.to_thread(run_cli, environment, args, stdin=stdin)
    return Run(done.returncode, done.stdout, done.stderr)


def files_bytes(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in data_dir.rglob("*") if path.is_file())


async def stored_tokens(data_dir: Path) -> dict[str, str]:
    store = store_for(Settings(data_dir=data_dir))
    await store.open()
    try:
        _, records = await store.records_load(KIND)
    finally:
        await store.close()
    return {name: decode(name, data).token for name, data in records.items()}


async def test_add_list_and_rm_never_show_or_store_the_value(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = await mirapi(data, "secrets", "add", "stripe", "--host", "API.Stripe.com", stdin=VALUE)
    assert added.code == 0, added.err
    assert "secret 'stripe' saved: sent to api.stripe.com as Authorization: Bearer <secret>" in (
        added.out
    )
    other = await mirapi(
        data,
        "secrets",
        "add",
        "openai",
        "--host",
        "api.openai.com",
        "--header",
        "X-Api-Key",
        "--format",
        "{}",
        stdin="oa_value_456\n",
    )
    assert other.code == 0, other.err

    listed, human = await asyncio.gather(
        mirapi(data, "secrets", "list", "--json", master=None),
        mirapi(data, "secrets", "list", master=None),
    )
    assert listed.json() == [
        {"name": "openai", "host": "api.openai.com", "header": "X-Api-Key", "format": "{}"},
        {
            "name": "stripe",
            "host": "api.stripe.com",
            "header": "Authorization",
            "format": "Bearer {}",
        },
    ]
    assert "api.openai.com" in human.out and VALUE not in human.out + listed.out

    tokens = await stored_tokens(data)
    assert Vault().decrypt_now(PASSPHRASE, tokens["stripe"], "stripe") == VALUE
    on_disk = files_bytes(data)
    for secret in (VALUE.encode(), PASSPHRASE.encode(), base64.b64encode(VALUE.encode())):
        assert secret not in on_disk

    removed = await mirapi(data, "secrets", "rm", "openai", master=None)
    assert removed.code == 0, removed.err
    gone, left = await asyncio.gather(
        mirapi(data, "secrets", "rm", "openai", master=None),
        mirapi(data, "secrets", "list", "--json"),
    )
    assert (gone.code, gone.err) == (1, "mirapi: error: no secret named 'openai'\n")
    assert [r["name"] for r in left.json()] == ["stripe"]


async def test_a_value_given_as_an_argument_is_refused_and_not_echoed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runs = await asyncio.gather(
        mirapi(data, "secrets", "add", "stripe", "sk_live_ARGUMENT", "--host", "api.stripe.com"),
        mirapi(
            data, "secrets", "add", "stripe", "--host", "h.example", "--value", "sk_live_ARGUMENT"
        ),
        mirapi(data, "secrets", "add", "stripe", "--host", "h.example", "--value=sk_live_ARGUMENT"),
        mirapi(data, "secrets", "encrypt", "sk_live_ARGUMENT"),
    )
    for run in runs:
        assert run.code == 2, run.err
        assert "never command-line arguments" in run.err
        assert "sk_live_ARGUMENT" not in run.out + run.err
    assert (await mirapi(data, "secrets", "list", "--json")).json() == []


async def test_one_install_one_passphrase_for_add_encrypt_and_unlock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await mirapi(data, "secrets", "add", "a", "--host", "a.example", stdin=VALUE)
    assert first.code == 0, first.err

    mixed, taken, same, made, wrong_token, wrong_unlock = await asyncio.gather(
        mirapi(data, "secrets", "add", "b", "--host", "b.example", stdin="v", master="another one"),
        mirapi(data, "secrets", "add", "a", "--host", "a.example", stdin="v"),
        mirapi(data, "secrets", "add", "c", "--host", "c.example", stdin="v2"),
        mirapi(data, "secrets", "encrypt", stdin="client_value_789\n"),
        mirapi(data, "secrets", "encrypt", stdin="client_value_789", master="another one"),
        mirapi(
            data, "sidecar", "start", "--listen", "127.0.0.1:0", "--unlock", master="another one"
        ),
    )
    for refused in (mixed, wrong_token, wrong_unlock):
        assert refused.code == 1
        assert "the passphrase does not match the stored secrets" in refused.err
        assert "another one" not in refused.err
    assert not (data / "sidecar.json").exists()
    assert taken.code == 1 and "a secret named 'a' exists already (use --replace" in taken.err
    assert same.code == 0, same.err
    names = [r["name"] for r in (await mirapi(data, "secrets", "list", "--json")).json()]
    assert names == ["a", "c"]

    # `encrypt` prints a free token (empty name) under the install's passphrase.
    assert made.code == 0, made.err
    token = made.out.strip()
    assert token.startswith("mirapi:v1:") and "client_value_789" not in made.out
    assert Vault().decrypt_now(PASSPHRASE, token, "") == "client_value_789"


async def test_bad_definitions_and_missing_input_are_refused_naming_what(tmp_path: Path) -> None:
    data = tmp_path / "data"
    add = ("secrets", "add")
    cases = [
        ((*add, "s", "--host", "https://api.example"), VALUE, "--host: give the hostname only"),
        ((*add, "s", "--host", "h.example", "--header", "X-Proxy-Key"), VALUE, "--header"),
        ((*add, "s", "--host", "h.example", "--format", "Bearer"), VALUE, "--format: must contain"),
        ((*add, "bad name", "--host", "h.example"), VALUE, "bad secret name"),
        ((*add, "s", "--host", "h.example"), "", "no secret value given"),
        ((*add, "s", "--host", "h.example"), "two\nlines", "printable ASCII without line breaks"),
    ]
    runs = await asyncio.gather(*(mirapi(data, *args, stdin=stdin) for args, stdin, _ in cases))
    for run, (_, stdin, says) in zip(runs, cases, strict=True):
        assert run.code == 1 and says in run.err, run.err
        assert "Traceback" not in run.err
        if stdin:
            assert stdin not in run.err

    no_key, short = await asyncio.gather(
        mirapi(data, *add, "s", "--host", "h.example", stdin=VALUE, master=None),
        mirapi(data, *add, "s", "--host", "h.example", stdin=VALUE, master="short"),
    )
    assert no_key.code == 1 and "set $MIRAPI_MASTER_KEY" in no_key.err
    assert short.code == 1 and "at least 8 characters" in short.err
    assert (await mirapi(data, "secrets", "list", "--json")).json() == []


async def test_rotate_passphrase_re_encrypts_every_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Both first, at once: each sees no secret yet, and both use one passphrase.
    added = await asyncio.gather(
        *(
            mirapi(data, "secrets", "add", name, "--host", f"{name}.example", stdin=name * 9)
            for name in ("a", "b")
        )
    )
    assert [run.code for run in added] == [0, 0], [run.err for run in added]
    before = await stored_tokens(data)
    new = "a brand new passphrase"

    wrong = await mirapi(
        data, "secrets", "rotate-passphrase", master="not it at all", MIRAPI_NEW_MASTER_KEY=new
    )
    assert wrong.code == 1 and "nothing was changed" in wrong.err
    assert await stored_tokens(data) == before

    rotated = await mirapi(data, "secrets", "rotate-passphrase", MIRAPI_NEW_MASTER_KEY=new)
    assert rotated.code == 0, rotated.err
    assert "re-encrypted 2 secrets" in rotated.out and "--unlock" in rotated.out
    after = await stored_tokens(data)
    assert after.keys() == before.keys() and not set(after.values()) & set(before.values())
    assert Vault().decrypt_now(new, after["b"], "b") == "b" * 9
