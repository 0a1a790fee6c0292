"""The vault: token format, authenticity, the fixed cost, the key cache and the derivation cap.

Most tests use a low scrypt cost (n=2**10) for speed; one checks that the
OWASP default really derives (OpenSSL refuses it without a raised maxmem).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import VaultBusy
from sidecar.security.vault import (
    DEFAULT_COST,
    PREFIX,
    BadToken,
    KdfCost,
    Vault,
    VaultError,
    WrongPassphrase,
    derive_key,
    split_token,
)

FAST = KdfCost(n=2**10)
PASSPHRASE = "correct horse battery staple"
VALUE = "sk_live_51HxYzSecretValue"


def fast_vault(**options: int) -> Vault:
    return Vault(FAST, **options)


def raw_of(token: str) -> bytes:
    body = token[len(PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


@settings(max_examples=60, deadline=None)
@given(
    plaintext=st.text(st.characters(blacklist_categories=["Cs"]), max_size=200),
    name=st.text(st.characters(blacklist_categories=["Cs"]), max_size=64),
    passphrase=st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=64),
)
def test_what_is_encrypted_decrypts_with_the_same_passphrase_and_name(
    plaintext: str, name: str, passphrase: str
) -> None:
    vault = fast_vault()
    token = vault.encrypt_now(passphrase, plaintext, name)
    assert token.startswith(PREFIX)
    assert vault.decrypt_now(passphrase, token, name) == plaintext
    with pytest.raises(WrongPassphrase):
        vault.decrypt_now(passphrase + "x", token, name)
    with pytest.raises(WrongPassphrase):
        vault.decrypt_now(passphrase, token, name + "x")


def test_a_token_is_prefix_and_unpadded_base64url_of_salt_nonce_ciphertext_and_tag() -> None:
    token = fast_vault().encrypt_now(PASSPHRASE, VALUE, "stripe")
    body = token[len(PREFIX) :]
    assert "=" not in body and "+" not in body and "/" not in body
    assert len(raw_of(token)) == 16 + 12 + len(VALUE) + 16
    salt, nonce, sealed = split_token(token)
    assert (len(salt), len(nonce), len(sealed)) == (16, 12, len(VALUE) + 16)
    # Fresh salt and nonce every time: equal values give unrelated tokens.
    again = fast_vault().encrypt_now(PASSPHRASE, VALUE, "stripe")
    assert split_token(again)[0] != salt
    assert VALUE.encode() not in raw_of(token)


def test_every_altered_byte_is_refused() -> None:
    vault = fast_vault()
    token = vault.encrypt_now(PASSPHRASE, VALUE, "stripe")
    raw = raw_of(token)
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        forged = PREFIX + base64.urlsafe_b64encode(bytes(altered)).decode().rstrip("=")
        with pytest.raises(WrongPassphrase):
            vault.decrypt_now(PASSPHRASE, forged, "stripe")


def test_a_stored_token_cannot_be_used_under_another_name_or_as_a_free_token() -> None:
    vault = fast_vault()
    token = vault.encrypt_now(PASSPHRASE, VALUE, "stripe")
    for other in ("openai", "", "stripe "):
        with pytest.raises(WrongPassphrase):
            vault.decrypt_now(PASSPHRASE, token, other)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "sk_live_plain",
        "mirapi:v2:AAAA",
        PREFIX,
        PREFIX + "AAAA",  # too short for salt, nonce and tag
        PREFIX + "!!!!" * 20,
        PREFIX + "A" * 60 + "==",
        PREFIX + "A" * 61,  # a length base64 cannot have
        PREFIX + "A" * 20_000,
    ],
)
def test_what_is_not_a_token_is_a_bad_token_and_the_message_does_not_quote_it(token: str) -> None:
    with pytest.raises(BadToken) as raised:
        fast_vault().decrypt_now(PASSPHRASE, token, "x")
    if token:
        assert token not in str(raised.value)
    assert PASSPHRASE not in str(raised.value)


def test_messages_never_hold_the_passphrase_the_token_or_the_value() -> None:
    vault = fast_vault()
    token = vault.encrypt_now(PASSPHRASE, VALUE, "stripe")
    with pytest.raises(VaultError) as raised:
        vault.decrypt_now("wrong " + PASSPHRASE, token, "stripe")
    text = f"{raised.value} {raised.value!r}"
    for secret in (PASSPHRASE, token, VALUE, token[len(PREFIX) :]):
        assert secret not in text


def test_the_cost_is_never_read_from_the_token() -> None:
    weak = Vault(KdfCost(n=2**4))
    token = weak.encrypt_now(PASSPHRASE, VALUE, "stripe")
    # A vault decrypts with its own (fixed) cost, so a token made at another
    # cost, cheap or huge, is simply not decryptable.
    with pytest.raises(WrongPassphrase):
        fast_vault().decrypt_now(PASSPHRASE, token, "stripe")


def test_the_default_cost_is_owasp_and_openssl_accepts_it() -> None:
    assert (DEFAULT_COST.n, DEFAULT_COST.r, DEFAULT_COST.p) == (2**17, 8, 1)
    key = derive_key(b"pw", b"s" * 16, DEFAULT_COST)
    assert key == hashlib.scrypt(b"pw", salt=b"s" * 16, n=2**17, r=8, p=1, maxmem=2**28, dklen=32)


def test_the_passphrase_is_normalised_so_composed_and_decomposed_accents_agree() -> None:
    vault = fast_vault()
    token = vault.encrypt_now("caf\u00e9 au lait", VALUE, "s")
    assert vault.decrypt_now("cafe\u0301 au lait", token, "s") == VALUE


async def test_async_round_trip_and_the_key_is_cached_after_the_first_derivation() -> None:
    vault = fast_vault()
    token = await vault.encrypt(PASSPHRASE, VALUE, "stripe")
    stored = vault.encrypt_now(PASSPHRASE, "other", "openai")
    before = vault.derivations
    assert await vault.decrypt(PASSPHRASE, token, "stripe") == VALUE
    assert vault.derivations == before  # encrypt cached its key
    assert await vault.decrypt(PASSPHRASE, stored, "openai") == "other"
    assert await vault.decrypt(PASSPHRASE, stored, "openai") == "other"
    assert vault.derivations == before + 1
    with pytest.raises(WrongPassphrase):
        await vault.decrypt("wrong", stored, "openai")


async def test_concurrent_requests_for_one_key_share_one_derivation() -> None:
    vault = fast_vault()
    token = vault.encrypt_now(PASSPHRASE, VALUE, "stripe")
    before = vault.derivations
    results = await asyncio.gather(*(vault.decrypt(PASSPHRASE, token, "stripe") for _ in range(20)))
    assert results == [VALUE] * 20
    assert vault.derivations == before + 1


async def test_a_flood_of_wrong_passphrases_does_not_evict_the_keys_in_use() -> None:
    vault = fast_vault(cache_size=2)
    token = vault.encrypt_now(PASSPHRASE, VALUE, "stripe")
    await vault.decrypt(PASSPHRASE, token, "stripe")
    for n in range(10):
        with pytest.raises(WrongPassphrase):
            await vault.decrypt(f"guess {n}", token, "stripe")
    before = vault.derivations
    assert await vault.decrypt(PASSPHRASE, token, "stripe") == VALUE
    assert vault.derivations == before
    # A wrong passphrase repeated is answered from the (unverified) cache too.
    with pytest.raises(WrongPassphrase):
        await vault.decrypt("guess 9", token, "stripe")
    assert vault.derivations == before


class GatedKdf:
    """A KDF that blocks until released, counting how many run at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.running = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, passphrase: bytes, salt: bytes, cost: KdfCost) -> bytes:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            assert self.gate.wait(10)
            return hashlib.sha256(passphrase + salt).digest()
        finally:
            with self._lock:
                self.running -= 1


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not so within {within}s")


async def test_derivations_are_capped_and_beyond_the_queue_fail_fast_with_503() -> None:
    kdf = GatedKdf()
    vault = Vault(FAST, max_concurrent=1, max_waiting=1, kdf=kdf)
    tokens = [fast_vault().encrypt_now(PASSPHRASE, VALUE, "s") for _ in range(3)]
    first = asyncio.ensure_future(vault.decrypt("a", tokens[0], "s"))
    await until(lambda: kdf.running == 1)
    second = asyncio.ensure_future(vault.decrypt("b", tokens[1], "s"))
    await asyncio.sleep(0.05)
    with pytest.raises(VaultBusy) as busy:
        await vault.decrypt("c", tokens[2], "s")
    assert busy.value.status == 503 and busy.value.retry_after == 1
    kdf.gate.set()
    for pending in (first, second):
        with pytest.raises(WrongPassphrase):  # the gated KDF derives other keys
            await pending
    assert kdf.most == 1 and kdf.calls == 2


async def test_a_cancelled_request_keeps_its_derivation_slot_until_the_derivation_ends() -> None:
    kdf = GatedKdf()
    vault = Vault(FAST, max_concurrent=1, max_waiting=4, kdf=kdf)
    tokens = [fast_vault().encrypt_now(PASSPHRASE, VALUE, "s") for _ in range(2)]
    gone = asyncio.ensure_future(vault.decrypt("a", tokens[0], "s"))
    await until(lambda: kdf.running == 1)
    gone.cancel()
    later = asyncio.ensure_future(vault.decrypt("b", tokens[1], "s"))
    await asyncio.sleep(0.05)
    assert kdf.calls == 1  # the second waits: the cancelled one still runs
    kdf.gate.set()
    with pytest.raises(WrongPassphrase):
        await later
    assert kdf.most == 1 and kdf.calls == 2
