"""Secret injection (SPEC §2.8, §6): credentials the app never holds.

Runs once per request, after Routing has set the targets and before the
smart cache and any upstream attempt, so a locked secret fails fast (401
secret_locked) and nothing is sent. It decides, per target URL, the
headers to lay over every attempt to it (`Exchange.secret_headers`, which
Forward applies last, over the client's and the endpoint's own headers).

`X-Identity-Key: VALUE` becomes `Authorization` for every target: `Bearer
VALUE`, or VALUE as it is when it holds a space (`Basic ...`). A
`mirapi:v1:` token there (`mirapi secrets encrypt`) is decrypted first.

Otherwise the secret is chosen per target, the first that applies:

1. the route endpoint's own `secret` (on another host: 500 route_invalid),
2. the route's `secret`, when it is for this target's host,
3. `X-Proxy-Secret: NAME`, when it is for this target's host,
4. the stored secret whose host is the target's host (several: the first
   by name), unless the route endpoint itself sets that header.

So every endpoint of a route and every failover URL gets its own host's
secret and never another host's: `X-Proxy-Secret: stripe` with
`X-Target-URL: https://evil.example` cannot carry the Stripe key away. A
named secret (2, 3) whose host no target has is an error (500
route_invalid / 400 bad_header); an unknown name is one too.

The injected header replaces the client's of the same name. Every official
SDK sends a key of its own (`OpenAI(api_key="unused")`: it refuses an
empty one), and the point of a stored secret is that the app holds none,
so a placeholder must never reach the upstream.

The passphrase is `X-Proxy-Master-Key`, else the one the sidecar was
unlocked with (`mirapi sidecar start --unlock`); none, or a wrong one: 401
secret_locked. The proxy headers themselves never reach the upstream
(strip_headers drops every `X-Proxy-*` and `X-Identity-*`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sidecar.errors import BadHeader, MirApiError, RouteInvalid, SecretLocked
from sidecar.exchange import Exchange, Next, Response
from sidecar.headers import ANTHROPIC_VERSION
from sidecar.routing.routes import Endpoint
from sidecar.security.secrets import Secret, SecretError, check_value, for_host, target_host
from sidecar.security.vault import BadToken, Vault, WrongPassphrase, is_token

IDENTITY = "x-identity-key"
PICK = "x-proxy-secret"
MASTER_KEY = "x-proxy-master-key"
#: The associated-data name of free tokens (`mirapi secrets encrypt`).
FREE_TOKEN_NAME = ""

InjectedHeaders = tuple[tuple[str, str], ...]


def header_text(value: str) -> str:
    """A header value as the client typed it: the edge decodes bytes as latin-1,
    so a UTF-8 passphrase is decoded again (left as it is if it is not UTF-8)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def identity_authorization(value: str) -> str:
    """`X-Identity-Key`'s value as an Authorization value: a bare key is a Bearer token."""
    return value if " " in value else f"Bearer {value}"


class _Passphrase:
    """The request's passphrase, asked for only when a secret must be decrypted."""

    def __init__(self, exchange: Exchange, unlocked: str | None) -> None:
        sent = exchange.header(MASTER_KEY)
        self.value = header_text(sent) if sent else unlocked
        self.from_header = bool(sent)

    def get(self) -> str:
        if self.value is None:
            raise SecretLocked(
                "a stored secret is needed: send X-Proxy-Master-Key, or start the sidecar"
                " with `mirapi sidecar start --unlock`"
            )
        return self.value

    def locked(self) -> SecretLocked:
        where = "X-Proxy-Master-Key" if self.from_header else "the sidecar was unlocked with"
        return SecretLocked(f"the passphrase ({where}) does not decrypt the secret")


class InjectSecrets:
    """Sets `exchange.secret_headers` from X-Identity-Key, a named or a host's secret."""

    def __init__(
        self, secrets: Callable[[], Mapping[str, Secret]], vault: Vault, unlocked: str | None
    ) -> None:
        self._secrets = secrets
        self._vault = vault
        self._unlocked = unlocked

    async def __call__(self, exchange: Exchange, call_next: Next) -> Response:
        plan = await self.plan(exchange)
        if plan:
            exchange.secret_headers = _as_providers_take_them(exchange, plan)
        return await call_next(exchange)

    async def plan(self, exchange: Exchange) -> dict[str, InjectedHeaders]:
        """Per target URL, the headers to inject (decrypted now, so failures come first)."""
        passphrase = _Passphrase(exchange, self._unlocked)
        identity = exchange.header(IDENTITY)
        if identity is not None:
            header = ("authorization", await self._identity(identity, passphrase))
            return {url: (header,) for url in exchange.targets}
        stored = self._secrets()
        named = self._named(exchange, stored)
        if not stored:
            return {}  # the common case without secrets: no URL parsing per request
        picked: dict[str, Secret] = {}
        hosts = set()
        for index, url in enumerate(exchange.targets):
            host = target_host(url)
            hosts.add(host)
            secret = self._for_target(exchange, index, host, stored, named)
            if secret is not None:
                picked[url] = secret
        for secret in named:
            if secret.host not in hosts:
                raise self._misplaced(exchange, secret)
        values: dict[str, tuple[str, str]] = {}
        plan: dict[str, InjectedHeaders] = {}
        for url, secret in picked.items():
            if secret.name not in values:
                value = await self._decrypt(secret, passphrase)
                values[secret.name] = secret.header_for(value)
            plan[url] = (values[secret.name],)
        return plan

    def _for_target(
        self,
        exchange: Exchange,
        index: int,
        host: str,
        stored: Mapping[str, Secret],
        named: tuple[Secret, ...],
    ) -> Secret | None:
        """The secret for the target at `index`, in the order of the module docstring."""
        endpoint = _endpoint_at(exchange, index)
        if endpoint is not None and endpoint.secret is not None:
            return _endpoint_secret(exchange, index, endpoint, host, stored)
        for secret in named:
            if secret.host == host:
                return secret
        matched = for_host(stored, host)
        if matched is None or _endpoint_sets(exchange, index, matched):
            return None
        return matched

    async def _identity(self, raw: str, passphrase: _Passphrase) -> str:
        value = raw.strip()
        if not value:
            raise BadHeader("X-Identity-Key", "empty")
        if is_token(value):
            try:
                value = await self._vault.decrypt(passphrase.get(), value, FREE_TOKEN_NAME)
            except WrongPassphrase:
                raise passphrase.locked() from None
            except BadToken as error:
                raise BadHeader("X-Identity-Key", f"not a valid token ({error})") from None
            try:
                check_value(value)
            except SecretError:
                raise BadHeader("X-Identity-Key", "the token holds no usable value") from None
        return identity_authorization(value)

    def _named(self, exchange: Exchange, stored: Mapping[str, Secret]) -> tuple[Secret, ...]:
        """The secrets the route and then the request name, in that order of precedence."""
        named: list[Secret] = []
        route = exchange.route
        if route is not None and route.secret is not None:
            secret = stored.get(route.secret)
            if secret is None:
                raise RouteInvalid(
                    f"route {route.name!r} names secret {route.secret!r}, which is gone"
                )
            named.append(secret)
        name = exchange.header(PICK)
        if name is not None:
            name = name.strip()
            secret = stored.get(name)
            if secret is None:
                raise BadHeader("X-Proxy-Secret", f"no secret named {name!r}")
            named.append(secret)
        return tuple(named)

    def _misplaced(self, exchange: Exchange, secret: Secret) -> MirApiError:
        why = f"secret {secret.name!r} is for host {secret.host}, which no target here has"
        route = exchange.route
        if route is not None and route.secret == secret.name:
            return RouteInvalid(f"route {route.name!r}: {why}")
        return BadHeader("X-Proxy-Secret", why)

    async def _decrypt(self, secret: Secret, passphrase: _Passphrase) -> str:
        try:
            value = await self._vault.decrypt(passphrase.get(), secret.token, secret.name)
            return check_value(value)
        except WrongPassphrase:
            raise passphrase.locked() from None
        except (BadToken, SecretError):
            raise MirApiError(
                f"stored secret {secret.name!r} is unusable; add it again",
                code="secret_invalid",
            ) from None


def _as_providers_take_them(
    exchange: Exchange, plan: dict[str, InjectedHeaders]
) -> dict[str, InjectedHeaders]:
    """The plan with a Bearer key to an `anthropic` endpoint sent as Anthropic takes it.

    Anthropic reads its key from `x-api-key` (SPEC §10), plus
    `anthropic-version`, which a client calling an OpenAI-format API never
    sends. A secret stored with a header of its own is left as it is.
    """
    header_mode = exchange.policy.llm_provider
    if header_mode != "anthropic" and not any(
        option.provider == "anthropic" for option in exchange.target_options
    ):
        return plan
    for index, url in enumerate(exchange.targets):
        injected = plan.get(url)
        provider = (
            exchange.target_options[index].provider
            if index < len(exchange.target_options)
            else header_mode
        )
        if injected is None or provider != "anthropic":
            continue
        plan[url] = tuple(_anthropic_header(exchange, injected))
    return plan


def _anthropic_header(exchange: Exchange, injected: InjectedHeaders) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for name, value in injected:
        if name == "authorization" and value.startswith("Bearer "):
            headers.append(("x-api-key", value[len("Bearer ") :]))
            if exchange.header("anthropic-version") is None:
                headers.append(ANTHROPIC_VERSION)
        else:
            headers.append((name, value))
    return headers


def _endpoint_at(exchange: Exchange, index: int) -> Endpoint | None:
    """The route endpoint the target at `index` was made from (route mode only)."""
    route = exchange.route
    if route is None or index >= len(route.endpoints):
        return None
    return route.endpoints[index]


def _endpoint_secret(
    exchange: Exchange, index: int, endpoint: Endpoint, host: str, stored: Mapping[str, Secret]
) -> Secret:
    """The endpoint's own secret; it must exist and be for the endpoint's host."""
    assert exchange.route is not None and endpoint.secret is not None
    where = f"route {exchange.route.name!r}, endpoint {index + 1}"
    secret = stored.get(endpoint.secret)
    if secret is None:
        raise RouteInvalid(f"{where} names secret {endpoint.secret!r}, which is gone")
    if secret.host != host:
        raise RouteInvalid(
            f"{where}: secret {secret.name!r} is for host {secret.host}, not {host or 'this one'}"
        )
    return secret


def _endpoint_sets(exchange: Exchange, index: int, secret: Secret) -> bool:
    """Whether the route endpoint at `index` sets the secret's header itself.

    An operator's explicit endpoint header beats a host-matched default; the
    client's own header does not (it is the SDK's placeholder).
    """
    if index >= len(exchange.target_options):
        return False
    name = secret.header.lower()
    return any(header == name for header, _ in exchange.target_options[index].headers)
