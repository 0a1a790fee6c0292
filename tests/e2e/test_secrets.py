"""Secrets end to end (issue 6): real sidecars, a real upstream, the real CLI.

Secrets are stored by `mirapi secrets add` (value on stdin, passphrase in
$MIRAPI_MASTER_KEY, as a script would), the sidecar is started detached
with `--unlock` (the CLI hands it the passphrase over the child's stdin) or
locked, and the upstream on 127.0.0.1 records what it received. At the end
the whole data dir, the sidecar's log included, is searched byte for byte
for every value and the passphrase, raw and base64-encoded at each of the
three alignments.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path

import httpx

from tests.support.cli import Cli, run_cli
from tests.support.upstream import Upstream

PASSPHRASE = "e2e passphrase for secrets"
STORED = "sk_live_E2eStoredSecretValue42"
IDENTITY = "sk_live_E2eIdentityTokenValue7"
ARGUMENT = "sk_live_E2eGivenAsAnArgument"


async def mirapi(
    cli: Cli, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """`mirapi ARGS` with `stdin` (in this process where that is the same: `run_cli`),
    in a thread so the upstream in this loop keeps answering."""
    return await asyncio.to_thread(run_cli, {**cli.env, **env}, args, stdin=stdin)


async def store_secret_and_token(cli: Cli) -> str:
    """Store secret `up` for 127.0.0.1; return a token of IDENTITY for X-Identity-Key."""
    added = await mirapi(
        cli,
        "secrets",
        "add",
        "up",
        "--host",
        "127.0.0.1",
        stdin=STORED + "\n",
        MIRAPI_MASTER_KEY=PASSPHRASE,
    )
    assert added.returncode == 0, added.stderr
    made = await mirapi(cli, "secrets", "encrypt", stdin=IDENTITY, MIRAPI_MASTER_KEY=PASSPHRASE)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("mirapi:v1:")
    return token


async def start(cli: Cli, *args: str, **env: str) -> str:
    done = await mirapi(
        cli, "sidecar", "start", "--listen", "127.0.0.1:0", "--allow-private", *args, **env
    )
    assert done.returncode == 0, done.stderr
    return str(cli.state()["address"])


def proc_file(pid: int, view: str) -> bytes:
    return Path(f"/proc/{pid}/{view}").read_bytes()


def encodings(secret: str) -> list[bytes]:
    """`secret` raw, and every run of base64 (standard and URL-safe) its bytes always produce."""
    raw = secret.encode()
    found = [raw]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        # Characters wholly made of the secret's bits, whatever surrounds it.
        first = -(-8 * shift // 6)
        last = 8 * (shift + len(raw)) // 6
        run = encoded[first:last]
        found += [run, run.replace(b"+", b"-").replace(b"/", b"_")]
    return found


def leaks(data_dir: Path, secrets: list[str]) -> list[str]:
    """Which files under `data_dir` hold any of `secrets` in any encoding."""
    found = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        content = path.read_bytes()
        for secret in secrets:
            if any(form in content for form in encodings(secret)):
                found.append(f"{path.name}: {secret[:6]}...")
    return found


async def test_secrets_are_injected_locked_and_never_written_in_clear(
    cli: Cli, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    token = await store_secret_and_token(cli)
    refused = await mirapi(
        cli,
        "secrets",
        "add",
        "other",
        ARGUMENT,
        "--host",
        "127.0.0.1",
        MIRAPI_MASTER_KEY=PASSPHRASE,
    )
    assert refused.returncode == 2
    assert "never command-line arguments" in refused.stderr
    assert ARGUMENT not in refused.stdout + refused.stderr

    url = await start(cli, "--unlock", MIRAPI_MASTER_KEY=PASSPHRASE)
    pid = int(cli.state()["pid"])
    # Handed over stdin: neither the daemon's arguments nor its environment hold it.
    for view in ("cmdline", "environ"):
        assert PASSPHRASE.encode() not in proc_file(pid, view)

    # A stored secret, matched by host, injected as Authorization.
    stored = await http.post(
        url + "/v1/charges", headers={"X-Target-URL": upstream.url}, content=b"amount=1"
    )
    assert stored.status_code == 200, stored.text
    assert upstream.seen[-1].headers["authorization"] == f"Bearer {STORED}"

    # A wrong passphrase in the request: 401 secret_locked, and no upstream call.
    calls = len(upstream.seen)
    wrong = await http.get(
        url + "/v1/x", headers={"X-Target-URL": upstream.url, "X-Proxy-Master-Key": "wrong!"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "secret_locked"
    assert "wrong!" not in wrong.text
    assert len(upstream.seen) == calls

    # An encrypted token in X-Identity-Key, decrypted and injected.
    identity = await http.get(
        url + "/v1/me", headers={"X-Target-URL": upstream.url, "X-Identity-Key": token}
    )
    assert identity.status_code == 200, identity.text
    seen = upstream.seen[-1]
    assert seen.headers["authorization"] == f"Bearer {IDENTITY}"
    assert not any(name.startswith(("x-identity-", "x-proxy-")) for name in seen.headers)

    # The passphrase in the header works the same, and is not logged.
    header = await http.get(
        url + "/v1/y", headers={"X-Target-URL": upstream.url, "X-Proxy-Master-Key": PASSPHRASE}
    )
    assert header.status_code == 200
    assert upstream.seen[-1].headers["authorization"] == f"Bearer {STORED}"

    stopped = await mirapi(cli, "sidecar", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert (cli.data_dir / "sidecar.log").exists()
    assert leaks(cli.data_dir, [STORED, IDENTITY, PASSPHRASE, ARGUMENT]) == []


async def test_a_locked_sidecar_asks_for_the_passphrase_and_takes_it_from_the_header(
    cli: Cli, upstream: Upstream, http: httpx.AsyncClient
) -> None:
    await store_secret_and_token(cli)
    url = await start(cli)

    locked = await http.get(url + "/v1/x", headers={"X-Target-URL": upstream.url})
    assert locked.status_code == 401
    error = locked.json()["error"]
    assert error["code"] == "secret_locked"
    assert "X-Proxy-Master-Key" in error["message"] and "--unlock" in error["message"]
    assert upstream.seen == []

    unlocked = await http.get(
        url + "/v1/x", headers={"X-Target-URL": upstream.url, "X-Proxy-Master-Key": PASSPHRASE}
    )
    assert unlocked.status_code == 200, unlocked.text
    assert upstream.seen[-1].headers["authorization"] == f"Bearer {STORED}"

    # A client's own Authorization (an SDK's placeholder) is replaced by the
    # host's secret (SPEC §2.8): still locked without a passphrase, and with
    # one the upstream sees the stored secret, never the placeholder.
    own = {"X-Target-URL": upstream.url, "Authorization": "Bearer placeholder"}
    assert (await http.get(url + "/v1/x", headers=own)).status_code == 401
    replaced = await http.get(url + "/v1/x", headers={**own, "X-Proxy-Master-Key": PASSPHRASE})
    assert replaced.status_code == 200
    assert upstream.seen[-1].headers["authorization"] == f"Bearer {STORED}"
