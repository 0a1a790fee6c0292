"""`mirapi webhooks secret`: the install's webhook signing secret (SPEC §5).

Callbacks are signed per Standard Webhooks with one secret per install
(per data dir, or per Redis shared by many sidecars). It is created on
first use, by whichever comes first: this command or a sidecar's first
delivery; both go through `JobStore.webhook_secret`, so they agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mirapi_cli.options import ConfigOption, DataDirOption
from mirapi_cli.store_access import with_store

if TYPE_CHECKING:
    from sidecar.store.jobs import JobStore

RedisOption = Annotated[
    str | None,
    typer.Option(
        "--redis", metavar="URL", help="The secret shared through Redis (env: MIRAPI_REDIS)."
    ),
]

app = typer.Typer(
    help="Webhook signing: the secret receivers verify callbacks with.", no_args_is_help=True
)


@app.command()
def secret(
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print the signing secret (whsec_...), creating it on first use."""
    from mirapi_cli import output

    output.write_lines([read_secret(data_dir, config, redis)])


def read_secret(data_dir: Path | None, config: Path | None, redis: str | None) -> str:
    """The install's secret: the stored one, else a new one, stored."""
    from sidecar.jobs.webhooks import new_secret

    async def get(store: JobStore) -> str:
        return await store.webhook_secret(new_secret())

    return with_store(data_dir, config, redis, get)
