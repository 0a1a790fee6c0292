"""Client keys (SPEC §2.1): who may use the sidecar once it is not loopback-only.

A key is shown to its owner once, by `mirapi keys create`, and sent by the
app in `X-MirApi-Key` on every request:

    mk_<ID>_<SECRET>        ID      12 lowercase hex characters (48 bits),
                                    public: `mirapi keys list` and `revoke` use it
                            SECRET  32 random bytes, base64url (43 characters)

The store keeps one record per key (kind "keys", record name = ID) holding
`{id, name, hash, created}`, where `hash` is the hex SHA-256 of the whole
key text. The key itself is never written anywhere: a stolen data dir or
Redis dump gives ids and hashes, and 256 random bits cannot be brute-forced
from a hash, so a plain SHA-256 (no salt, no stretching) is enough; a slow
hash would only cost every request.

`authenticate` finds the record by the ID in the presented key, then
compares hashes with `hmac.compare_digest`. When the ID is unknown it still
compares, against a dummy hash, so that an unknown id and a known id with
a wrong secret take the same path and the same time.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

#: The request header that carries a client key.
HEADER = "X-MirApi-Key"
#: The store's record kind for client keys.
KIND = "keys"

PREFIX = "mk_"
ID_LENGTH = 12
#: Random bytes in the secret part; token_urlsafe(32) gives 43 characters.
SECRET_BYTES = 32
MAX_NAME_LENGTH = 64

ID_PATTERN = re.compile(rf"[0-9a-f]{{{ID_LENGTH}}}")
KEY_PATTERN = re.compile(rf"mk_(?P<id>[0-9a-f]{{{ID_LENGTH}}})_[A-Za-z0-9_-]{{43}}")
_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
#: Exactly the length of every key this module makes: longer input is refused
#: before any regex or hash work.
KEY_LENGTH = len(PREFIX) + ID_LENGTH + 1 + 43

#: Compared against when the presented ID is unknown: no key hashes to it
#: (it is not a SHA-256 output anyone can aim at), and it has the same length
#: as a real hash so the comparison costs the same.
_DUMMY_HASH = hashlib.sha256(b"mirapi: no such client key").hexdigest()


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One stored client key: its public id, a label, the hash of its text."""

    id: str
    name: str | None
    #: Hex SHA-256 of the whole key text. Out of the repr: not secret, but
    #: nothing a log line needs.
    hash: str = field(repr=False)
    #: Unix seconds.
    created: int


class KeyNameError(ValueError):
    """A `--name` that cannot label a key; the message says why, not the name."""


def check_name(name: str | None) -> str | None:
    """`name` if it can label a key (1 to 64 printable characters), else KeyNameError."""
    if name is None:
        return None
    if not name:
        raise KeyNameError("the name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise KeyNameError(f"the name is {len(name)} characters long; at most {MAX_NAME_LENGTH}")
    if not name.isprintable():
        # Control characters would rewrite the terminal of whoever lists keys.
        raise KeyNameError("the name must be printable (no control characters or line breaks)")
    return name


def hash_key(text: str) -> str:
    """The stored form of a key: hex SHA-256 of its text (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


def new_key(name: str | None, now: float) -> tuple[ClientKey, str]:
    """A fresh key: the record to store, and the key text to show once."""
    key_id = secrets.token_hex(ID_LENGTH // 2)
    text = f"{PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    record = ClientKey(id=key_id, name=check_name(name), hash=hash_key(text), created=int(now))
    return record, text


def key_id(presented: str | None) -> str | None:
    """The ID part of a well-formed key text, else None."""
    if presented is None or len(presented) != KEY_LENGTH:
        return None
    match = KEY_PATTERN.fullmatch(presented)
    return None if match is None else match["id"]


def authenticate(presented: str | None, keys: Mapping[str, ClientKey]) -> ClientKey | None:
    """The stored key that `presented` is, or None (missing, malformed, unknown, wrong).

    A malformed key is refused on its shape alone, which says nothing about
    what is stored. A well-formed one always costs one hash and one
    constant-time comparison, whether or not its ID exists.
    """
    wanted = key_id(presented)
    if wanted is None or presented is None:
        return None
    stored = keys.get(wanted)
    expected = _DUMMY_HASH if stored is None else stored.hash
    matches = hmac.compare_digest(hash_key(presented), expected)
    return stored if stored is not None and matches else None


def encode(key: ClientKey) -> bytes:
    """The record as stored: compact JSON, without the key text."""
    return orjson.dumps({"id": key.id, "name": key.name, "hash": key.hash, "created": key.created})


def decode(record_name: str, data: bytes) -> ClientKey:
    """The inverse of `encode`; ValueError naming the field for anything else.

    Messages name the record and the field, never a stored value.
    """

    def bad(what: str) -> ValueError:
        return ValueError(f"client key record {record_name!r}: {what}")

    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise bad("not JSON") from None
    if not isinstance(raw, dict):
        raise bad("not a JSON object")

    key_id_ = raw.get("id")
    if not isinstance(key_id_, str) or ID_PATTERN.fullmatch(key_id_) is None:
        raise bad("id is not 12 lowercase hex characters")
    if key_id_ != record_name:
        raise bad("stored under another id")
    digest = raw.get("hash")
    if not isinstance(digest, str) or _HASH_PATTERN.fullmatch(digest) is None:
        raise bad("hash is not a hex SHA-256")
    name = raw.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise bad("name is not a string")
        try:
            check_name(name)
        except KeyNameError:
            # What `keys list` prints must be as safe as what `create` accepts.
            raise bad(f"name is not 1 to {MAX_NAME_LENGTH} printable characters") from None
    created = raw.get("created")
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise bad("created is not a number")
    if not math.isfinite(created):
        raise bad("created is not a finite number")
    return ClientKey(id=key_id_, name=name, hash=digest, created=int(created))
