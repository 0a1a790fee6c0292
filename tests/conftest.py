"""Shared fixtures: a real upstream and a real sidecar, both on loopback.

Also the suite's scheduling under pytest-xdist (`--dist loadgroup`, see
pyproject.toml): tests marked `xdist_group(NAME)` run on one worker, in
order, others are spread one by one. And a shared fixture that cannot start
fails once: the first test that needs it errors with the cause, the others
are skipped, naming that test.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.app import Sidecar
from sidecar.config import Settings
from sidecar.security.egress import EgressPolicy
from tests.support.redis import RedisServer
from tests.support.servers import serving
from tests.support.upstream import Upstream, start_upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A scripted HTTP upstream on 127.0.0.1."""
    server, runner = await start_upstream()
    try:
        yield server
    finally:
        await runner.cleanup()


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C works in the processes tests start, even when the suite itself ignores it.

    A suite started in the background by a non-interactive shell (`... &`, as
    CI or a script may) inherits SIGINT ignored, and so would every process a
    test starts: `mirapi sidecar logs -f` and `events tail -f` would never see
    the Ctrl-C their tests send. Python's own handler is reset to the default
    in a child, as a terminal's shell would have it.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # The suite starts hundreds of Pythons (`mirapi`, sidecars): with bytecode
    # caching off, each compiles this checkout's modules again (a tenth of a
    # second of CPU apiece). Workers and every process they start inherit this.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


#: Every test here starts real sidecar processes: seconds each (`-m "not slow"`).
SLOW_DIRECTORIES = ("e2e", "clients")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of SLOW_DIRECTORIES slow, and group the tests marked `xdist_group`."""
    tests = Path(__file__).parent
    slow = [tests / name for name in SLOW_DIRECTORIES]
    for item in items:
        if any(item.path.is_relative_to(directory) for directory in slow):
            item.add_marker(pytest.mark.slow)
    _group_by_xdist_group(config, items)


def _group_by_xdist_group(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give `xdist_group` its effect on pytest 9, where xdist 3.8's own does nothing.

    xdist groups a test by a `@NAME` suffix on its node id, which it sets as
    `item._nodeid`; pytest 9 keeps the id in `item._id`, so the suffix was
    lost and every group's tests went to any worker (each doc of the docs
    test, and each module-scoped sidecar, paid once per worker).
    """
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers only
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = NodeId.parse(item.nodeid + suffix)


#: Each failure of a module- or session-scoped fixture, with the test that reported it.
#: pytest re-raises the same exception object for every later test that needs it.
_FIXTURE_FAILURES: dict[int, tuple[BaseException, str]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A shared fixture's failure is an error once; later tests needing it are skipped."""
    report = yield
    if call.when != "setup" or call.excinfo is None or not report.failed:
        return report
    error = call.excinfo.value
    seen = _FIXTURE_FAILURES.get(id(error))
    if seen is None or seen[0] is not error:
        _FIXTURE_FAILURES[id(error)] = (error, item.nodeid)
        return report
    reason = f"a shared fixture failed in {seen[1]} (reported there): {type(error).__name__}"
    report.outcome = "skipped"
    report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {reason}")
    return report


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a test sidecar: its own data dir, loopback targets allowed."""
    values: dict[str, object] = {"data_dir": tmp_path, "allow_private": True}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def sidecar_url(tmp_path: Path) -> AsyncIterator[str]:
    """A sidecar served by Hypercorn in this process; its base URL."""
    settings = make_settings(tmp_path)
    app = Sidecar(settings, egress=EgressPolicy(allow_private=True))
    async with serving(app) as url:
        yield url


@pytest.fixture
async def client(sidecar_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client pointed at the test sidecar."""
    async with httpx.AsyncClient(base_url=sidecar_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the session (skipped when not installed)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private server's unix:// URL, emptied for this test."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and restart."""
    server = RedisServer(tmp_path_factory.mktemp("rd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
