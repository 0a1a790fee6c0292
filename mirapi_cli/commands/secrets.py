"""`mirapi secrets add | list | rm | encrypt | rotate-passphrase`: encrypted credentials (SPEC §6).

    add NAME --host H [--header Authorization] [--format "Bearer {}"] [--replace]
    list [--json]          name, host, header, format (never a value)
    rm NAME
    encrypt                prints a self-contained mirapi:v1: token (for X-Identity-Key)
    rotate-passphrase      re-encrypts every stored secret under a new passphrase

Values come from stdin or a hidden prompt, passphrases from
$MIRAPI_MASTER_KEY or a hidden prompt (mirapi_cli.passphrase); neither is
ever a command-line argument, and a value given as one is refused without
being repeated. One install has one passphrase: once a secret exists, a
passphrase that does not decrypt it is refused.

Secrets live in the store like routes (kind "secrets"); each command opens
the store the sidecar uses, and a change is in force on every live sidecar
sharing it when the command returns (SPEC §11): a removed secret is never
injected after `rm` has returned, by a sidecar that acknowledged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mirapi_cli.errors import CliError, ExitCode
from mirapi_cli.options import ConfigOption, DataDirOption, JsonOption
from mirapi_cli.propagation import change
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from rich.console import RenderableType

    from sidecar.security.secrets import Secret
    from sidecar.security.vault import Vault
    from sidecar.store.records import NamedRecordStore

RedisOption = Annotated[
    str | None,
    typer.Option(
        "--redis", metavar="URL", help="Secrets shared through Redis (env: MIRAPI_REDIS)."
    ),
]
#: Extra arguments reach the command (ctx.args) instead of click's usage error,
#: which would print them: a value typed as one is refused, never echoed.
TAKES_EXTRA = {"allow_extra_args": True}
RefusedValue = Annotated[str | None, typer.Option("--value", hidden=True, show_default=False)]

ARGUMENT_REFUSED = (
    "secret values are never command-line arguments (shell history and `ps` would keep"
    " them): pipe the value on stdin, or type it at the prompt"
)
MIXED_PASSPHRASES = (
    "the passphrase does not match the stored secrets (every secret of an install uses"
    " one passphrase; see `mirapi secrets rotate-passphrase`)"
)

app = typer.Typer(
    help="Encrypted credentials the sidecar injects into upstream calls.", no_args_is_help=True
)


@app.command(context_settings=TAKES_EXTRA)
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The secret's name.")],
    host: Annotated[
        str,
        typer.Option(
            "--host", metavar="HOST", help="The upstream host it is sent to (api.stripe.com)."
        ),
    ],
    header: Annotated[
        str, typer.Option(metavar="NAME", help="The header that carries it.")
    ] = "Authorization",
    format: Annotated[
        str, typer.Option("--format", metavar="TEMPLATE", help="The header's value; {} is it.")
    ] = "Bearer {}",
    value: RefusedValue = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a secret of that name.")] = (
        False
    ),
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Store a secret; its value is read from stdin (a hidden prompt on a terminal)."""
    from mirapi_cli import output, propagation
    from mirapi_cli.passphrase import check_new_passphrase, read_passphrase, read_value
    from sidecar.security import secrets
    from sidecar.security.vault import Vault

    _refuse_arguments(ctx.args, value)
    try:
        secrets.check_name(name)
        host = secrets.normalize_host(host)
        secrets.check_header(header)
        secrets.check_format(format)
    except secrets.SecretError as error:
        raise CliError(error.message) from None
    stored = load_secrets(data_dir, config, redis)
    if name in stored and not replace:
        raise CliError(f"a secret named {name!r} exists already (use --replace to overwrite it)")
    plain = _checked(read_value())
    passphrase = read_passphrase(confirm=not stored)
    vault = Vault()
    if stored:
        check_passphrase(passphrase, stored, vault)
    else:
        check_new_passphrase(passphrase)
    token = vault.encrypt_now(passphrase, plain, name)
    made = secrets.parse_secret(name, host, token, header, format)

    async def put(store: NamedRecordStore) -> bool:
        return await store.record_put(secrets.KIND, name, secrets.encode(made), replace)

    saved, in_force = change(data_dir, config, redis, [secrets.KIND], put)
    if not saved:
        raise CliError(f"a secret named {name!r} exists already (use --replace to overwrite it)")
    propagation.warn(in_force)
    if as_json:
        data = {"secret": name, "host": made.host, "header": made.header}
        output.print_json(data | propagation.as_json(in_force))
        return
    shown = made.format.replace("{}", "<secret>")
    output.say(
        f"secret {name!r} saved: sent to {made.host} as {made.header}: {shown}"
        + propagation.report(in_force)
    )


@app.command("list")
def list_secrets(
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List the secrets: name, host, header and format (never a value)."""
    from mirapi_cli import output

    rows = [
        {"name": s.name, "host": s.host, "header": s.header, "format": s.format}
        for s in load_secrets(data_dir, config, redis).values()
    ]

    def human() -> RenderableType | str:
        if not rows:
            return "no secrets (add one: mirapi secrets add NAME --host HOST)"
        return output.table(
            ("Name", "Host", "Header", "Format"),
            ((r["name"], r["host"], r["header"], r["format"]) for r in rows),
            ids=("Name",),
        )

    output.listing(rows, as_json=as_json, human=human)


@app.command()
def rm(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The secret to remove.")],
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove a secret; no sidecar injects it once this returns."""
    from mirapi_cli import output, propagation
    from sidecar.security import secrets

    async def delete(store: NamedRecordStore) -> bool:
        return await store.record_delete(secrets.KIND, name)

    removed, in_force = change(data_dir, config, redis, [secrets.KIND], delete)
    if not removed:
        raise CliError(f"no secret named {name!r}")
    propagation.warn(in_force)
    if as_json:
        output.print_json({"secret": name, "removed": True} | propagation.as_json(in_force))
        return
    output.say(f"secret {name!r} removed" + propagation.report(in_force))


@app.command(context_settings=TAKES_EXTRA)
def encrypt(
    ctx: typer.Context,
    value: RefusedValue = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print a mirapi:v1: token of a value (stdin) for X-Identity-Key."""
    from mirapi_cli import output
    from mirapi_cli.passphrase import check_new_passphrase, read_passphrase, read_value
    from sidecar.security.vault import Vault

    _refuse_arguments(ctx.args, value)
    plain = _checked(read_value())
    stored = load_secrets(data_dir, config, redis)
    passphrase = read_passphrase(confirm=not stored)
    vault = Vault()
    # The sidecar decrypts the token with its one passphrase: check it is that one.
    if stored:
        check_passphrase(passphrase, stored, vault)
    else:
        check_new_passphrase(passphrase)
    # The empty name: a free token, which no stored secret's token can pass for.
    output.write_lines([vault.encrypt_now(passphrase, plain, "")])


@app.command("rotate-passphrase")
def rotate_passphrase(
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Re-encrypt every stored secret under a new passphrase ($MIRAPI_NEW_MASTER_KEY or asked)."""
    from mirapi_cli import output, propagation
    from mirapi_cli.passphrase import NEW_MASTER_KEY_ENV, check_new_passphrase, read_passphrase
    from sidecar.security import secrets
    from sidecar.security.vault import BadToken, Vault, WrongPassphrase

    stored = load_secrets(data_dir, config, redis)
    if not stored:
        output.say("no secrets stored; nothing to re-encrypt")
        return
    old = read_passphrase(label="current passphrase")
    new = check_new_passphrase(
        read_passphrase(env=NEW_MASTER_KEY_ENV, label="new passphrase", confirm=True),
        "new passphrase",
    )
    if new == old:
        raise CliError("the new passphrase is the current one; nothing was changed")
    vault = Vault()
    output.note(f"re-encrypting {_count(len(stored), 'secret')}...")
    rotated: dict[str, Secret] = {}
    for name, secret in stored.items():
        try:
            plain = vault.decrypt_now(old, secret.token, name)
        except WrongPassphrase:
            raise CliError(
                f"the current passphrase does not decrypt secret {name!r}; nothing was changed"
            ) from None
        except BadToken:
            raise CliError(
                f"secret {name!r} is unreadable; remove it (or add it again) and rotate again;"
                " nothing was changed"
            ) from None
        rotated[name] = dataclasses.replace(secret, token=vault.encrypt_now(new, plain, name))

    async def write(store: NamedRecordStore) -> list[str]:
        await _put_all(store, rotated, stored)
        _, now = await store.records_load(secrets.KIND)
        return sorted(set(now) - set(rotated))

    added_meanwhile, in_force = change(
        data_dir, config, redis, [secrets.KIND], write, changed=lambda _: True
    )
    propagation.warn(in_force)
    for name in added_meanwhile:
        output.note(
            f"mirapi: warning: secret {name!r} was added during the rotation and still uses"
            " the old passphrase: add it again with --replace"
        )
    output.say(
        f"re-encrypted {_count(len(rotated), 'secret')}. Restart sidecars started with --unlock,"
        " and make X-Identity-Key tokens again with `mirapi secrets encrypt`:"
        " both used the old passphrase."
    )
    if in_force is not None:
        output.say(in_force.sentence())


# -- shared with `mirapi sidecar start --unlock` ------------------------------------


def load_secrets(
    data_dir: Path | None, config: Path | None, redis: str | None
) -> dict[str, Secret]:
    """Every stored secret that decodes, by name (sorted); the others named in a warning."""
    from mirapi_cli import output
    from sidecar.security import secrets

    async def load(store: NamedRecordStore) -> dict[str, bytes]:
        return (await store.records_load(secrets.KIND))[1]

    found: dict[str, Secret] = {}
    for name, data in sorted(with_store(data_dir, config, redis, load).items()):
        try:
            found[name] = secrets.decode(name, data)
        except (ValueError, KeyError, TypeError):
            output.note(f"mirapi: warning: secret {name!r} in the store is unreadable; skipped")
    return found


def check_passphrase(passphrase: str, stored: Mapping[str, Secret], vault: Vault) -> None:
    """CliError unless `passphrase` decrypts the stored secrets (the first readable one)."""
    from sidecar.security.vault import BadToken, WrongPassphrase

    for name in sorted(stored):
        try:
            vault.decrypt_now(passphrase, stored[name].token, name)
        except WrongPassphrase:
            raise CliError(MIXED_PASSPHRASES) from None
        except BadToken:
            continue
        return


def unlock_passphrase(data_dir: Path | None, config: Path | None, redis: str | None) -> str:
    """The passphrase for `sidecar start --unlock`, checked against the stored secrets."""
    from mirapi_cli import output
    from mirapi_cli.passphrase import read_passphrase
    from sidecar.security.vault import Vault

    passphrase = read_passphrase(stdin_line=True)
    stored = load_secrets(data_dir, config, redis)
    if stored:
        check_passphrase(passphrase, stored, Vault())
    else:
        output.note("no secrets are stored yet, so the passphrase could not be checked")
    return passphrase


# -- helpers ---------------------------------------------------------------------------


def _refuse_arguments(refused: list[str], value: str | None) -> None:
    if refused or value is not None:
        raise CliError(ARGUMENT_REFUSED, ExitCode.USAGE)


def _checked(value: str) -> str:
    from sidecar.security.secrets import SecretError, check_value

    try:
        return check_value(value)
    except SecretError as error:
        raise CliError(error.message) from None


async def _put_all(
    store: NamedRecordStore, rotated: Mapping[str, Secret], before: Mapping[str, Secret]
) -> None:
    """Write every re-encrypted secret; on a failure, put back those already written."""
    from sidecar.security import secrets

    written: list[str] = []
    try:
        for name, secret in rotated.items():
            await store.record_put(secrets.KIND, name, secrets.encode(secret), True)
            written.append(name)
    except BaseException:
        # Best effort: the error that stopped the writes is the one to report.
        for name in written:
            with contextlib.suppress(Exception):
                await store.record_put(secrets.KIND, name, secrets.encode(before[name]), True)
        raise


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
