"""MirApi sidecar: the reliability proxy that runs beside an app."""

__version__ = "0.1.0"

import sys as _sys

# httpx's package imports its command-line client (rich, pygments, click:
# ~3 MB resident) whenever those are installed; the sidecar never runs it.
# Without that module httpx falls back to a stub `httpx.main` (issue 20).
if "httpx" not in _sys.modules:
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
