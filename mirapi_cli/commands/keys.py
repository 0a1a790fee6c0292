"""`mirapi keys create | list | revoke`: the client keys sidecars accept (SPEC §2.1, §9).

    create [--name N] [--json]   make a key and print it, this once only
    list [--json]                every key: id, name, creation time (never a key)
    revoke ID                    delete a key; every sidecar refuses it when this returns

Keys live in the store, not in a running sidecar, like routes: each command
opens the store the sidecar uses (the data dir's SQLite, or Redis with
`--redis`), and returns once every live sidecar sharing it runs the change
(SPEC §11, mirapi_cli/propagation.py): a revoked key is never served after
`revoke` has returned, on a sidecar that acknowledged (one that did not is
named).
Only the SHA-256 hash of a key is stored (`sidecar.security.client_keys`), so a lost
key cannot be shown again: revoke it and create another.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mirapi_cli.errors import CliError
from mirapi_cli.options import ConfigOption, DataDirOption, JsonOption
from mirapi_cli.propagation import change
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from rich.console import RenderableType

    from sidecar.security.client_keys import ClientKey
    from sidecar.store.records import NamedRecordStore

RedisOption = Annotated[
    str | None,
    typer.Option("--redis", metavar="URL", help="Keys shared through Redis (env: MIRAPI_REDIS)."),
]

#: A fresh 48-bit id colliding with a stored one is all but impossible; a
#: few tries turn "all but" into "never" without looping forever on a bug.
_ID_ATTEMPTS = 5

app = typer.Typer(
    help="Client keys: who may call the sidecar (X-MirApi-Key).", no_args_is_help=True
)


@app.command()
def create(
    name: Annotated[
        str | None,
        typer.Option(metavar="N", help="A label for the key (up to 64 printable characters)."),
    ] = None,
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it; it is shown this once only."""
    from mirapi_cli import output, propagation
    from sidecar.security import client_keys

    try:
        client_keys.check_name(name)
    except client_keys.KeyNameError as error:
        raise CliError(f"--name: {error}") from None

    async def put(store: NamedRecordStore) -> tuple[ClientKey, str] | None:
        for _ in range(_ID_ATTEMPTS):
            record, text = client_keys.new_key(name, time.time())
            if await store.record_put(
                client_keys.KIND, record.id, client_keys.encode(record), False
            ):
                return record, text
        return None

    made, in_force = change(
        data_dir, config, redis, [client_keys.KIND], put, changed=lambda made: made is not None
    )
    if made is None:
        raise CliError("could not find an unused key id; try again")
    record, text = made
    propagation.warn(in_force)
    if as_json:
        data = {"id": record.id, "key": text, "name": record.name}
        output.print_json(data | propagation.as_json(in_force))
        return
    label = "" if record.name is None else f" ({record.name})"
    output.say(f"client key {record.id}{label} created:")
    # Raw, not through rich: the key must come out exactly, on one line.
    output.write_lines([text])
    output.say(
        "Copy it now: it cannot be shown again (only its SHA-256 hash is stored)."
        f" Apps send it as {client_keys.HEADER}."
    )
    if in_force is not None:
        output.say(in_force.sentence())


@app.command("list")
def list_keys(
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List the keys: id, name and when each was created (never the keys)."""
    from mirapi_cli import output

    stored = _load(data_dir, config, redis)
    rows = [{"id": k.id, "name": k.name, "created": k.created} for k in stored]

    def human() -> RenderableType | str:
        if not rows:
            return (
                "no client keys: sidecars serve loopback clients only"
                " (create one: mirapi keys create)"
            )
        return output.table(
            ("ID", "Name", "Created"),
            ((k.id, k.name, _iso(k.created)) for k in stored),
            ids=("ID",),
            optional=("Created",),
        )

    output.listing(rows, as_json=as_json, human=human)


@app.command()
def revoke(
    key_id: Annotated[
        str, typer.Argument(metavar="ID", help="The key's id, as `mirapi keys list` shows it.")
    ],
    as_json: JsonOption = False,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key: every sidecar refuses it once this returns."""
    from mirapi_cli import output, propagation
    from sidecar.security import client_keys

    if key_id.startswith(client_keys.PREFIX):
        # A pasted key, whole or cut: never echo it (terminals and CI logs keep it).
        raise CliError("give the key's id (mirapi keys list shows it), not the key itself")
    if client_keys.ID_PATTERN.fullmatch(key_id) is None:
        raise CliError(
            f"no client key with id {_shown(key_id)}"
            " (an id is 12 lowercase hex characters, as mirapi keys list shows)"
        )

    async def delete(store: NamedRecordStore) -> tuple[bool, int]:
        deleted = await store.record_delete(client_keys.KIND, key_id)
        _, left = await store.records_load(client_keys.KIND)
        return deleted, len(left)

    (deleted, left), in_force = change(
        data_dir, config, redis, [client_keys.KIND], delete, changed=lambda done: done[0]
    )
    if not deleted:
        raise CliError(f"no client key with id {key_id!r}")
    propagation.warn(in_force)
    if as_json:
        data = {"id": key_id, "revoked": True, "keys_left": left}
        output.print_json(data | propagation.as_json(in_force))
        return
    output.say(f"client key {key_id} revoked" + propagation.report(in_force))
    if left == 0:
        output.note("no client keys left: sidecars serve loopback clients only, without a key")


# -- the store -----------------------------------------------------------------


def _load(data_dir: Path | None, config: Path | None, redis: str | None) -> list[ClientKey]:
    """Every stored key that decodes, oldest first."""
    from mirapi_cli import output
    from sidecar.security import client_keys

    async def load(store: NamedRecordStore) -> dict[str, bytes]:
        return (await store.records_load(client_keys.KIND))[1]

    found: list[ClientKey] = []
    for record_name, data in with_store(data_dir, config, redis, load).items():
        try:
            found.append(client_keys.decode(record_name, data))
        except ValueError as error:
            # decode's messages name the record and field, never a value.
            output.note(f"mirapi: warning: {error}; skipped")
    return sorted(found, key=lambda k: (k.created, k.id))


def _iso(seconds: int) -> str:
    """Unix seconds as ISO 8601 UTC; a time out of range as the number it is."""
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return str(seconds)


def _shown(text: str) -> str:
    """User input quoted for a message, cut short."""
    return repr(text if len(text) <= 40 else text[:37] + "...")
