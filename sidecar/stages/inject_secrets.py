"""Secret injection (SPEC §2.8, §6): credentials the app never holds.

Runs once per request, after Routing has set the targets and before the
smart cache and any upstream attempt, so a locked secret fails fast (401
secret_locked) and nothing is sent. It decides, per target URL, the
headers to lay over every attempt to it (`Exchange.secret_headers`, which
Forward applies last, over the endpoint's own headers). Which credential:

1. `X-Identity-Key: VALUE` becomes `Authorization` for every target: `Bearer
   VALUE`, or VALUE as it is when it holds a space (`Basic ...`). A
   `mirapi:v1:` token there (`mirapi secrets encrypt`) is decrypted first.
2. else `X-Proxy-Secret: NAME` (unknown: 400 bad_header),
3. else the route's `secret` (unknown: 500 route_invalid),
4. else, per target, the stored secret whose host is the target's host
   (several: the first by name), unless the client or the endpoint already
   sends that header: a host match is a default, not an override.

A named secret (2, 3) replaces the client's header of the same name, but
only on targets on the secret's own host: a secret never leaves for
another host, so `X-Proxy-Secret: stripe` with `X-Target-URL:
https://evil.example` cannot carry the Stripe key away. A named secret none
of the targets can take is an error (400 bad_header / 500 route_invalid);
the other targets fall back to (4).

The passphrase is `X-Proxy-Master-Key`, else the one the sidecar was
unlocked with (`mirapi sidecar start --unlock`); none, or a wrong one: 401
secret_locked. The proxy headers themselves never reach the upstream
(strip_headers drops every `X-Proxy-*` and `X-Identity-*`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sidecar.errors import BadHeader, MirApiError, RouteInvalid, SecretLocked
from sidecar.exchange import Exchange, Next, Response
from sidecar.secrets import Secret, SecretError, check_value, for_host, target_host
from sidecar.vault import BadToken, Vault, WrongPassphrase, is_token

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
            exchange.secret_headers = plan
        return await call_next(exchange)

    async def plan(self, exchange: Exchange) -> dict[str, InjectedHeaders]:
        """Per target URL, the headers to inject (decrypted now, so failures come first)."""
        passphrase = _Passphrase(exchange, self._unlocked)
        identity = exchange.header(IDENTITY)
        if identity is not None:
            header = ("authorization", await self._identity(identity, passphrase))
            return {url: (header,) for url in exchange.targets}
        stored = self._secrets()
        chosen = self._named(exchange, stored)
        if not stored:
            return {}  # the common case without secrets: no URL parsing per request
        picked: dict[str, Secret] = {}
        for index, url in enumerate(exchange.targets):
            host = target_host(url)
            if chosen is not None and chosen.host == host:
                picked[url] = chosen
                continue
            secret = for_host(stored, host)
            if secret is not None and not _already_sent(exchange, index, secret):
                picked[url] = secret
        if chosen is not None and chosen not in picked.values():
            raise self._misplaced(exchange, chosen)
        values: dict[str, tuple[str, str]] = {}
        plan: dict[str, InjectedHeaders] = {}
        for url, secret in picked.items():
            if secret.name not in values:
                value = await self._decrypt(secret, passphrase)
                values[secret.name] = secret.header_for(value)
            plan[url] = (values[secret.name],)
        return plan

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

    def _named(self, exchange: Exchange, stored: Mapping[str, Secret]) -> Secret | None:
        """The secret the request or its route names, or None."""
        name = exchange.header(PICK)
        if name is not None:
            name = name.strip()
            secret = stored.get(name)
            if secret is None:
                raise BadHeader("X-Proxy-Secret", f"no secret named {name!r}")
            return secret
        route = exchange.route
        if route is None or route.secret is None:
            return None
        secret = stored.get(route.secret)
        if secret is None:
            raise RouteInvalid(f"route {route.name!r} names secret {route.secret!r}, which is gone")
        return secret

    def _misplaced(self, exchange: Exchange, secret: Secret) -> MirApiError:
        why = f"secret {secret.name!r} is for host {secret.host}, which no target here has"
        if exchange.header(PICK) is not None:
            return BadHeader("X-Proxy-Secret", why)
        assert exchange.route is not None
        return RouteInvalid(f"route {exchange.route.name!r}: {why}")

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


def _already_sent(exchange: Exchange, index: int, secret: Secret) -> bool:
    """Whether the client, or the route endpoint at `index`, sends the secret's header."""
    name = secret.header.lower()
    if exchange.header(name) is not None:
        return True
    if index < len(exchange.target_options):
        return any(header == name for header, _ in exchange.target_options[index].headers)
    return False
