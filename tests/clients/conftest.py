"""Fixtures for the SDK contract suite: a real sidecar process and fake upstreams.

Each test module starts one sidecar (`mirapi sidecar start --allow-private`,
on 127.0.0.1 port 0) with its own data dir, routes imported from TOML and
secrets added through the real CLI before it starts, and its own fakes on
loopback addresses (127.0.0.2, 127.0.0.3, ...: a secret is matched by host,
so each endpoint needs a host of its own). The SDKs are synchronous: the
fakes run on an event loop in a thread (tests/clients/fakes.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
import requests
import stripe

from tests.clients.fakes import (
    AnthropicFake,
    Fake,
    FakeLoop,
    OpenAIFake,
    StripeFake,
    fake_loop,
)
from tests.support.cli import Cli, kill_leftover

PASSPHRASE = "clients suite passphrase"


@dataclass(frozen=True)
class SecretSpec:
    """A secret to add with `mirapi secrets add NAME --host HOST` (value on stdin)."""

    name: str
    host: str
    value: str
    header: str = "Authorization"
    format: str = "Bearer {}"


@dataclass
class Sidecar:
    """A running sidecar process: its CLI (data dir) and base URL."""

    cli: Cli
    url: str = ""

    def mirapi(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return self.cli(*args, stdin=stdin, MIRAPI_MASTER_KEY=PASSPHRASE)

    def must(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        done = self.mirapi(*args, stdin=stdin)
        assert done.returncode == 0, f"mirapi {' '.join(args)}: {done.stderr}"
        return done

    def import_routes(
        self, toml: str, name: str = "routes.toml"
    ) -> subprocess.CompletedProcess[str]:
        path = self.cli.data_dir.parent / name
        path.write_text(toml)
        return self.mirapi("routes", "import", str(path))


@dataclass
class Counter:
    """An event hook that counts the requests an SDK really sends.

    On an httpx2.Client: openai 3 accepts httpx or httpx2 clients, anthropic 2
    only httpx2 (it refuses an httpx.Client with a TypeError).
    """

    sent: list[httpx2.Request] = field(default_factory=list)

    def client(self) -> httpx2.Client:
        return httpx2.Client(timeout=20, event_hooks={"request": [self.sent.append]})


def route_table(policy: str = "", **urls: str) -> str:
    """TOML for routes with one endpoint each: `route_table(chat=URL)` is route `chat`.

    `policy` (TOML lines such as `retry = 2`) goes into every route.
    """
    return "".join(
        f'[routes.{name}]\n{policy}endpoints = [{{ url = "{url}" }}]\n'
        for name, url in urls.items()
    )


@dataclass(frozen=True)
class ApiFakes:
    """One fake per API, each behind a route of its name: chat, claude, pay."""

    chat: OpenAIFake
    claude: AnthropicFake
    pay: StripeFake

    @classmethod
    def serve(cls, loop: FakeLoop) -> ApiFakes:
        return cls(
            chat=loop.serve(OpenAIFake()),
            claude=loop.serve(AnthropicFake()),
            pay=loop.serve(StripeFake()),
        )

    def all(self) -> tuple[Fake, ...]:
        return (self.chat, self.claude, self.pay)

    def routes(self, policy: str = "") -> str:
        return route_table(policy, chat=self.chat.url, claude=self.claude.url, pay=self.pay.url)


@dataclass
class StripeCounter:
    """stripe-python's own HTTP client (requests), counting the requests it sends."""

    sent: list[requests.Response] = field(default_factory=list)

    def client(self) -> stripe.HTTPClient:
        session = requests.Session()
        session.hooks["response"].append(self._count)
        return stripe.RequestsClient(session=session)

    def _count(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.sent.append(response)


# With a module whose `fakes` fixture gives ApiFakes: one fake, fresh for the test.
@pytest.fixture
def chat(fakes: ApiFakes) -> OpenAIFake:
    fakes.chat.reset()
    return fakes.chat


@pytest.fixture
def claude(fakes: ApiFakes) -> AnthropicFake:
    fakes.claude.reset()
    return fakes.claude


@pytest.fixture
def pay(fakes: ApiFakes) -> StripeFake:
    fakes.pay.reset()
    return fakes.pay


@pytest.fixture(scope="module")
def loop() -> Iterator[FakeLoop]:
    """The event loop thread that serves this module's fakes."""
    with fake_loop() as made:
        yield made


@contextmanager
def start_sidecar(
    base: Path, routes: str, secrets: tuple[SecretSpec, ...] = ()
) -> Iterator[Sidecar]:
    """Add `secrets`, import `routes`, start a sidecar (unlocked when secrets exist).

    The running sidecar, in a data dir under `base`; stopped on leaving.
    """
    config = base / "config.toml"
    config.write_text("")
    cli = Cli(base / "data", config)
    cli.env.pop("MIRAPI_MASTER_KEY", None)
    sidecar = Sidecar(cli)
    try:
        for secret in secrets:
            sidecar.must(
                "secrets",
                "add",
                secret.name,
                "--host",
                secret.host,
                "--header",
                secret.header,
                "--format",
                secret.format,
                stdin=secret.value,
            )
        imported = sidecar.import_routes(routes)
        assert imported.returncode == 0, f"routes import: {imported.stderr}"
        unlock = ("--unlock",) if secrets else ()
        started = cli(
            "sidecar",
            "start",
            "--listen",
            "127.0.0.1:0",
            "--allow-private",
            *unlock,
            MIRAPI_MASTER_KEY=PASSPHRASE,
        )
        assert started.returncode == 0, f"sidecar start: {started.stderr}"
        sidecar.url = str(cli.state()["address"])
        yield sidecar
    finally:
        if cli.state_file.exists():
            cli("sidecar", "stop")
            kill_leftover(cli.state_file)
