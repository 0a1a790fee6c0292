"""Serve the sidecar with Hypercorn in this process until SIGTERM or SIGINT.

    claim the data dir → bind (here, so port 0 works and the real port is
    known) → app start-up (ASGI lifespan) → Hypercorn accepts → state file
    written → serve
    SIGTERM/SIGINT → stop accepting; in-flight requests get shutdown_grace
    seconds → app shut-down → state file removed (if still ours) → exit 0
    a second signal → stop now (exit 1)

One process, one event loop (uvloop when installed), no Hypercorn worker
processes: PERFORMANCE.md measured workers=1 at three processes and ~88 MB,
in-process serving at one process and ~47 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.utils import LifespanFailureError

from sidecar import __version__, bounded
from sidecar.app import create_app
from sidecar.config import Settings
from sidecar.process import memory
from sidecar.process.state import (
    DataDirBusy,
    SidecarState,
    claim_data_dir,
    release_data_dir,
    remove_state,
    write_state,
)

log = logging.getLogger("mirapi")

# The CLI's `stop` waits shutdown_grace + 5 s before SIGKILL; the app's own
# shut-down (closing pools) must fit in that margin.
LIFESPAN_SHUTDOWN_TIMEOUT = 4.0


ASGIApp = Callable[..., Any]


def run(settings: Settings, app: ASGIApp | None = None, *, master_key: str | None = None) -> int:
    """Serve `create_app(settings)` (or `app`) until a signal; the exit code (0: clean stop).

    `master_key` is the secrets' passphrase of `mirapi sidecar start --unlock`:
    handed to the app in memory, never logged or written.
    """
    memory.tune_malloc()  # before any thread: see sidecar/process/memory.py
    memory.install_from_env()
    bounded.configure(settings.lookup_cache_max_bytes)
    try:
        claim = claim_data_dir(settings.data_dir)
    except DataDirBusy as error:
        log.error("%s; stop it first with `mirapi sidecar stop`", error)
        return 1
    unix_path = Path(settings.unix) if settings.unix else None
    try:
        return _run_claimed(settings, app, master_key)
    finally:
        if unix_path is not None:
            _unlink_socket(unix_path)
        release_data_dir(claim)


def _run_claimed(settings: Settings, app: ASGIApp | None, master_key: str | None) -> int:
    config = hypercorn_config(settings)
    try:
        address = bind(config, settings)
    except OSError as error:
        where = settings.unix or settings.listen
        log.error("cannot listen on %s: %s", where, error.strerror or error)
        return 1
    try:
        app = app or create_app(settings, master_key=master_key)
    except Exception:
        log.exception("the sidecar could not be set up")
        return 1
    state = SidecarState.now(address, __version__)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(app, config, lambda: _announce(settings.data_dir, state)))
    except asyncio.CancelledError:
        log.warning("stopped without waiting for in-flight requests")
        return 1
    except LifespanFailureError as error:
        # The app said why it cannot start (a refused bind, a store it cannot
        # open): that sentence is the whole story, not a traceback.
        log.error("the sidecar could not start: %s", _lifespan_reason(error))
        return 1
    except Exception:
        log.exception("the sidecar stopped on an error")
        return 1
    finally:
        remove_state(settings.data_dir, state.pid)
    log.info("stopped")
    return 0


def _lifespan_reason(error: LifespanFailureError) -> str:
    """The app's own message inside Hypercorn's "Lifespan failure in startup. '...'"."""
    text = str(error)
    _, _, quoted = text.partition(". ")
    return quoted[1:-1] if quoted.startswith("'") and quoted.endswith("'") else text


def hypercorn_config(settings: Settings) -> Config:
    """Hypercorn's settings for the sidecar (binding is done by `bind`)."""
    config = Config()
    config.accesslog = None  # the app writes its own JSON access line
    config.errorlog = logging.getLogger("hypercorn.error")  # through our JSON handler
    # Per read from an idle or trickling client; Hypercorn takes whole seconds.
    config.read_timeout = max(1, math.ceil(settings.read_timeout))
    config.graceful_timeout = settings.shutdown_grace
    config.shutdown_timeout = LIFESPAN_SHUTDOWN_TIMEOUT
    # The upstream's Server header passes through; Hypercorn's would be a
    # second one, and advertises the stack.
    config.include_server_header = False
    # Proxied answers carry the upstream's Date; the sidecar's own add theirs.
    config.include_date_header = False
    # Recycling a keep-alive connection every 1,000 requests shows as a p99
    # spike under load; callers on loopback can keep theirs much longer.
    config.keep_alive_max_requests = 100_000
    config.umask = 0o177  # a unix socket only its owner may connect to
    return config


def bind(config: Config, settings: Settings) -> str:
    """Bind and listen now; hand the sockets to Hypercorn. Returns the address to announce.

    Hypercorn binds only after the app has started and never says which port
    it got, so the sockets are made here (with Hypercorn's own options) and
    passed on as `fd://` binds, which Hypercorn serves as they are.
    """
    if settings.unix:
        _refuse_live_socket(Path(settings.unix))
        config.bind = [f"unix:{settings.unix}"]
    else:
        config.bind = [settings.listen]
    sockets = config.create_sockets().insecure_sockets
    for sock in sockets:
        # Listening before the app starts up: early clients wait in the
        # backlog instead of being refused.
        sock.listen(config.backlog)
    address = _address_of(sockets[0], settings.unix)
    config.bind = [f"fd://{sock.detach()}" for sock in sockets]
    return address


def _address_of(sock: socket.socket, unix: str | None) -> str:
    """What clients should dial: a wildcard bind is reached through loopback."""
    if unix:
        return f"unix:{unix}"
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _refuse_live_socket(path: Path) -> None:
    """Hypercorn replaces an existing socket file; refuse if something answers there."""
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return  # a leftover from a dead process: Hypercorn may replace it
    raise OSError(errno.EADDRINUSE, f"{os.strerror(errno.EADDRINUSE)} ({path})")


def _unlink_socket(path: Path) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(path.stat().st_mode):
            path.unlink()


def _announce(data_dir: Path, state: SidecarState) -> None:
    write_state(data_dir, state)
    log.info("listening on %s (pid %d, version %s)", state.address, state.pid, state.version)


async def _serve(app: Any, config: Config, on_ready: Callable[[], None]) -> None:
    stop = asyncio.Event()
    _handle_signals(stop)

    async def shutdown_trigger() -> None:
        # Hypercorn awaits the trigger only once its listeners accept
        # connections: the moment to announce the address.
        on_ready()
        await stop.wait()

    await serve(app, config, shutdown_trigger=shutdown_trigger)


def _handle_signals(stop: asyncio.Event) -> None:
    """First SIGTERM/SIGINT: graceful shutdown. Second: cancel everything now."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            if main is not None:
                main.cancel()
            return
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        _add_signal_handler(loop, signum, on_signal)


def _add_signal_handler(
    loop: asyncio.AbstractEventLoop, signum: int, handler: Callable[[int], None]
) -> None:
    try:
        loop.add_signal_handler(signum, handler, signum)
    except NotImplementedError:  # Windows event loops
        signal.signal(signum, lambda number, _frame: loop.call_soon_threadsafe(handler, number))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (~90 µs less CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
