"""sidecar/wiring.py and the app's lifespan: parts start in order, stop in reverse."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sidecar.app import Sidecar
from sidecar.wiring import Service
from tests.conftest import make_settings


async def _lifespan(app: Sidecar, *steps: str) -> list[str]:
    """Drive the app's ASGI lifespan through `steps`; the answers' types."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app.lifespan(inbox.get, outbox.put))
    answers = []
    for step in steps:
        await inbox.put({"type": f"lifespan.{step}"})
        answers.append((await asyncio.wait_for(outbox.get(), 10))["type"])
    await asyncio.wait_for(task, 10)
    return answers


def _recorded(services: list[Service], log: list[str]) -> list[Service]:
    """`services`, each noting its start and stop in `log` before doing it."""

    def wrap(service: Service) -> Service:
        async def start() -> None:
            log.append(f"start {service.name}")
            await service.start()

        async def stop() -> None:
            log.append(f"stop {service.name}")
            await service.stop()

        return Service(service.name, start, stop)

    return [wrap(service) for service in services]


async def test_services_start_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    app = Sidecar(make_settings(tmp_path))
    names = [service.name for service in app.services]
    # The store opens first and closes last; jobs start once all they need
    # has, and stop first; the control endpoints come after everything.
    assert names[0] == "store"
    assert names[-2:] == ["job workers", "control endpoints"]
    log: list[str] = []
    app.services = _recorded(app.services, log)

    answers = await _lifespan(app, "startup", "shutdown")

    assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert log == [f"start {n}" for n in names] + [f"stop {n}" for n in reversed(names)]


async def test_a_service_failing_to_start_fails_the_startup_and_starts_nothing_after(
    tmp_path: Path,
) -> None:
    app = Sidecar(make_settings(tmp_path))
    log: list[str] = []

    async def broken() -> None:
        raise RuntimeError("no luck")

    app.services = _recorded([app.services[0], Service("broken", broken), Service("after")], log)

    answers = await _lifespan(app, "startup")

    assert answers == ["lifespan.startup.failed"]
    assert log == ["start store", "start broken"]
    await app.store.close()
