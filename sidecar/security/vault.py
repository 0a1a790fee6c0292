"""Passphrase encryption for secrets (SPEC §6): scrypt, then AES-256-GCM.

A token is self-contained: the passphrase alone decrypts it.

    mirapi:v1:<base64url, no padding, of  salt (16 B) || nonce (12 B) || ciphertext+tag>

    key  = scrypt(passphrase (UTF-8, NFC), salt, n=2**17, r=8, p=1, dklen=32)
    data = AES-256-GCM(key, nonce, plaintext, associated data = b"mirapi:v1:" + name)

The associated data binds a token to the name it is stored under, so a
stored ciphertext cannot be moved onto another secret's name (or used as an
`X-Identity-Key`, whose tokens carry the empty name). The KDF's cost is that
of OWASP's password storage sheet and is *not* read from the token: a
token asking for a huge cost would be a way to burn the sidecar's CPU.

Deriving a key costs about half a second of CPU and 128 MiB, so:

- derived keys are cached in memory, in a bounded LRU keyed by an HMAC
  (under a random per-process key) of salt || passphrase, never by the
  passphrase itself; a key joins the *verified* cache only once it has
  decrypted something, so a flood of wrong passphrases can fill the small
  *unverified* cache but never evicts the keys real requests use;
- concurrent requests for the same key share one derivation;
- at most `max_concurrent` derivations run at once (in threads), at most
  `max_waiting` more queue for a slot; beyond that `VaultBusy` (503,
  Retry-After: 1) fails fast rather than queueing without bound.

Errors never hold the passphrase, the token or the plaintext.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# The one module that encrypts secrets (see pyproject's banned-api note).
from sidecar.errors import VaultBusy

PREFIX = "mirapi:v1:"
SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
#: A token longer than this is not one of ours (a header holds a few KiB at most).
MAX_TOKEN_CHARS = 16 * 1024
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class KdfCost:
    """scrypt's cost parameters. Memory used: 128 * r * n bytes (128 MiB by default)."""

    n: int = 2**17
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        """The memory bound to give OpenSSL, whose default (32 MiB) refuses n=2**17."""
        return 128 * self.r * (self.n + self.p + 2) + 1024 * 1024


#: OWASP's scrypt recommendation; what every v1 token is decrypted with.
DEFAULT_COST = KdfCost()

Kdf = Callable[[bytes, bytes, KdfCost], bytes]


class VaultError(Exception):
    """A token that cannot be decrypted; the message is safe to show."""


class WrongPassphrase(VaultError):
    """The passphrase (or the name) is not the one the token was made with, or it was altered."""

    def __init__(self) -> None:
        super().__init__("the passphrase does not decrypt this secret")


class BadToken(VaultError):
    """Not a `mirapi:v1:` token at all."""


def derive_key(passphrase: bytes, salt: bytes, cost: KdfCost) -> bytes:
    """scrypt(passphrase, salt) at `cost`: a 32-byte AES key."""
    return hashlib.scrypt(
        passphrase, salt=salt, n=cost.n, r=cost.r, p=cost.p, dklen=KEY_BYTES, maxmem=cost.maxmem
    )


def passphrase_bytes(passphrase: str) -> bytes:
    """The passphrase as the KDF takes it: NFC, so a macOS and a Linux keyboard agree."""
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def associated_data(name: str) -> bytes:
    """What binds a token to its name ("" for a free token, as in X-Identity-Key)."""
    return PREFIX.encode() + name.encode("utf-8")


def is_token(value: str) -> bool:
    """Whether `value` claims to be a token (it may still be a malformed one)."""
    return value.startswith(PREFIX)


def split_token(token: str) -> tuple[bytes, bytes, bytes]:
    """(salt, nonce, ciphertext with tag) of `token`; BadToken when it is not one."""
    if not is_token(token):
        raise BadToken(f"not a {PREFIX} token")
    body = token[len(PREFIX) :]
    if len(token) > MAX_TOKEN_CHARS:
        raise BadToken(f"the token is longer than {MAX_TOKEN_CHARS} characters")
    # The decoder skips characters outside its alphabet; check them first.
    if _BASE64URL.fullmatch(body) is None:
        raise BadToken("the token is not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("the token is not unpadded base64url") from None
    if len(raw) < SALT_BYTES + NONCE_BYTES + TAG_BYTES:
        raise BadToken("the token is too short")
    salt, rest = raw[:SALT_BYTES], raw[SALT_BYTES:]
    return salt, rest[:NONCE_BYTES], rest[NONCE_BYTES:]


def join_token(salt: bytes, nonce: bytes, sealed: bytes) -> str:
    """The inverse of `split_token`."""
    return PREFIX + base64.urlsafe_b64encode(salt + nonce + sealed).decode().rstrip("=")


def seal(key: bytes, salt: bytes, plaintext: str, name: str) -> str:
    """Encrypt `plaintext` under `key` (derived from a passphrase and `salt`)."""
    # cryptography (OpenSSL, ~8 MB resident) is loaded on the first secret
    # used, not by every sidecar that has none (issue 20).
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), associated_data(name))
    return join_token(salt, nonce, sealed)


def unseal(key: bytes, nonce: bytes, sealed: bytes, name: str) -> str:
    """Decrypt and authenticate; WrongPassphrase when the tag does not verify."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # see `seal`

    try:
        plaintext = AESGCM(key).decrypt(nonce, sealed, associated_data(name))
    except InvalidTag:
        raise WrongPassphrase() from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        # Authentic, so made with this passphrase, but not by us.
        raise BadToken("the token does not hold text") from None


class _Lru:
    """A bounded map, least recently used out first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, ident: bytes) -> bytes | None:
        key = self._items.get(ident)
        if key is not None:
            self._items.move_to_end(ident)
        return key

    def put(self, ident: bytes, key: bytes) -> None:
        self._items[ident] = key
        self._items.move_to_end(ident)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def pop(self, ident: bytes) -> bytes | None:
        return self._items.pop(ident, None)


class Vault:
    """Encrypts and decrypts tokens; derivations cached, shared and capped (module doc)."""

    def __init__(
        self,
        cost: KdfCost = DEFAULT_COST,
        max_concurrent: int = 2,
        max_waiting: int = 16,
        cache_size: int = 256,
        *,
        kdf: Kdf = derive_key,
    ) -> None:
        self.cost = cost
        self._kdf = kdf
        self._max_waiting = max_waiting
        self._slots = asyncio.Semaphore(max_concurrent)
        self._waiting = 0
        # Cache keys are HMACs under a key that never leaves this process:
        # the cache holds no fast hash of a passphrase to brute-force.
        self._pepper = os.urandom(32)
        self._verified = _Lru(cache_size)
        self._unverified = _Lru(cache_size)
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        #: How many keys were derived (each costs ~0.5 s of CPU at the default cost).
        self.derivations = 0

    # -- async: the sidecar ------------------------------------------------------

    async def encrypt(self, passphrase: str, plaintext: str, name: str) -> str:
        """A new token for `plaintext` under `name` (a fresh salt, so one derivation)."""
        salt = os.urandom(SALT_BYTES)
        ident = self._ident(salt, passphrase)
        key = await self._key(ident, passphrase, salt)
        self._verified.put(ident, key)
        return seal(key, salt, plaintext, name)

    async def decrypt(self, passphrase: str, token: str, name: str) -> str:
        """The plaintext of `token`; WrongPassphrase, BadToken or VaultBusy otherwise."""
        salt, nonce, sealed = split_token(token)
        ident = self._ident(salt, passphrase)
        key = await self._key(ident, passphrase, salt)
        plaintext = unseal(key, nonce, sealed, name)
        if self._unverified.pop(ident) is not None:
            self._verified.put(ident, key)
        return plaintext

    # -- sync: the command line --------------------------------------------------

    def encrypt_now(self, passphrase: str, plaintext: str, name: str) -> str:
        """`encrypt`, blocking (no event loop, no cache)."""
        salt = os.urandom(SALT_BYTES)
        return seal(self._derive(passphrase, salt), salt, plaintext, name)

    def decrypt_now(self, passphrase: str, token: str, name: str) -> str:
        """`decrypt`, blocking (no event loop, no cache)."""
        salt, nonce, sealed = split_token(token)
        return unseal(self._derive(passphrase, salt), nonce, sealed, name)

    # -- keys --------------------------------------------------------------------

    def _ident(self, salt: bytes, passphrase: str) -> bytes:
        return hmac.new(self._pepper, salt + passphrase_bytes(passphrase), "sha256").digest()

    def _derive(self, passphrase: str, salt: bytes) -> bytes:
        self.derivations += 1
        return self._kdf(passphrase_bytes(passphrase), salt, self.cost)

    async def _key(self, ident: bytes, passphrase: str, salt: bytes) -> bytes:
        """The key for (salt, passphrase): cached, else one shared, capped derivation."""
        key = self._verified.get(ident) or self._unverified.get(ident)
        if key is not None:
            return key
        pending = self._pending.get(ident)
        if pending is None:
            if self._waiting >= self._max_waiting:
                raise VaultBusy("too many secrets are being unlocked at once; retry shortly")
            pending = asyncio.get_running_loop().create_task(
                self._derive_capped(ident, passphrase, salt)
            )
            self._pending[ident] = pending
            pending.add_done_callback(lambda done: self._settled(ident, done))
        # Shielded: a caller that gives up (deadline, client gone) leaves the
        # derivation to finish and hold its slot until it really ends, so
        # cancelled requests cannot run more than max_concurrent at once.
        return await asyncio.shield(pending)

    async def _derive_capped(self, ident: bytes, passphrase: str, salt: bytes) -> bytes:
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            key = await asyncio.to_thread(self._derive, passphrase, salt)
        finally:
            self._slots.release()
        self._unverified.put(ident, key)
        return key

    def _settled(self, ident: bytes, done: asyncio.Future[bytes]) -> None:
        self._pending.pop(ident, None)
        if not done.cancelled():
            done.exception()  # retrieved, so an unawaited failure is not logged as lost
