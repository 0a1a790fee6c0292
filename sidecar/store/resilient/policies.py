"""The two policies of the resilient wrapper, made for any capability Protocol.

`falls_back(Capability)` and `shared_only(Capability)` each return a mixin
class with one method per method of the Protocol (same name, same
signature, its docstring), so a capability gets its resilience by naming
its policy, never by a forwarder per method:

  - falls back: the call goes to Redis while it answers; the first call
    that finds Redis gone degrades the switch, and from then on (until a
    ping answers) every call goes to the local store. Nothing raises.
  - shared only: the call goes to Redis alone; while degraded it raises
    StoreUnavailable at once (the RedisStore's safe cause), and a call that
    finds Redis gone degrades the switch and raises.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from sidecar.errors import StoreUnavailable
from sidecar.store.resilient.switch import Switch

Method = Callable[..., Awaitable[Any]]


def methods(capability: type) -> dict[str, Method]:
    """The public async methods of a capability Protocol (its bases' too), by name."""
    return {
        name: member
        for name, member in inspect.getmembers(capability, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


def falls_back(capability: type) -> type:
    """A mixin over `Switch`: each method of `capability` on Redis, else on local state."""
    return _mixin(f"{capability.__name__}Mixin", capability, _falling_back)


def shared_only(capability: type) -> type:
    """A mixin over `Switch`: each method of `capability` on Redis only, else StoreUnavailable."""
    return _mixin(f"{capability.__name__}Mixin", capability, _shared)


def _mixin(name: str, capability: type, policy: Callable[[str], Method]) -> type:
    namespace: dict[str, Any] = {}
    for method_name, declared in methods(capability).items():
        method = policy(method_name)
        # The Protocol's name, docstring and signature (inspect follows __wrapped__).
        namespace[method_name] = functools.wraps(declared)(method)
    return type(name, (Switch,), namespace)


def _falling_back(name: str) -> Method:
    async def method(self: Switch, *args: Any, **kwargs: Any) -> Any:
        if not self._degraded:
            try:
                return await getattr(self._primary, name)(*args, **kwargs)
            except StoreUnavailable as exc:
                self._degrade(exc)
        return await getattr(self._local, name)(*args, **kwargs)

    return method


def _shared(name: str) -> Method:
    async def method(self: Switch, *args: Any, **kwargs: Any) -> Any:
        if self._degraded:
            raise StoreUnavailable(self._cause or "redis unreachable")
        try:
            return await getattr(self._primary, name)(*args, **kwargs)
        except StoreUnavailable as exc:
            self._degrade(exc)
            raise

    return method
