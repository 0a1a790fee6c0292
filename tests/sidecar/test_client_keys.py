"""Client keys: the key format, what is stored, and constant-time authentication."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from sidecar.security import client_keys
from sidecar.security.client_keys import (
    ClientKey,
    KeyNameError,
    authenticate,
    check_name,
    decode,
    encode,
    hash_key,
    key_id,
    new_key,
)

NOW = 1_700_000_000.75


def test_a_new_key_is_mk_id_secret_and_its_record_holds_only_the_hash() -> None:
    record, text = new_key("ci", NOW)

    prefix, key_id_part, secret = text[:3], text[3:15], text[16:]
    assert prefix == "mk_" and text[15] == "_"
    assert key_id_part == record.id
    assert len(record.id) == 12 and set(record.id) <= set("0123456789abcdef")
    assert len(secret) == 43 and set(secret) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    assert record.hash == hashlib.sha256(text.encode()).hexdigest()
    assert record.name == "ci"
    assert record.created == 1_700_000_000
    assert key_id(text) == record.id


def test_keys_and_ids_are_random() -> None:
    made = [new_key(None, NOW) for _ in range(200)]
    assert len({record.id for record, _ in made}) == 200
    assert len({text[16:] for _, text in made}) == 200


def test_the_stored_record_never_holds_the_key_or_its_secret() -> None:
    record, text = new_key("prod app", NOW)
    stored = encode(record)

    assert orjson.loads(stored) == {
        "id": record.id,
        "name": "prod app",
        "hash": record.hash,
        "created": 1_700_000_000,
    }
    assert text.encode() not in stored
    assert text[16:].encode() not in stored
    assert text not in repr(record) and record.hash not in repr(record)


def test_a_record_decodes_back_equal() -> None:
    record, _ = new_key(None, NOW)
    assert decode(record.id, encode(record)) == record
    named, _ = new_key("ünïcode ✓", NOW)
    assert decode(named.id, encode(named)) == named


GOOD = {"id": "0123456789ab", "name": "ci", "hash": "a" * 64, "created": 1}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (orjson.dumps({**GOOD, "id": "0123456789AB"}), "id is not"),
        (orjson.dumps({**GOOD, "id": 12}), "id is not"),
        (orjson.dumps({**GOOD, "id": "ba9876543210"}), "stored under another id"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "hash"}), "hash is not"),
        (orjson.dumps({**GOOD, "hash": "A" * 64}), "hash is not"),
        (orjson.dumps({**GOOD, "hash": "a" * 63}), "hash is not"),
        (orjson.dumps({**GOOD, "name": 3}), "name is not a string"),
        (orjson.dumps({**GOOD, "name": "line\nbreak"}), "name is not"),
        (orjson.dumps({**GOOD, "name": "x" * 65}), "name is not"),
        (orjson.dumps({**GOOD, "created": "yesterday"}), "created is not"),
        (orjson.dumps({**GOOD, "created": True}), "created is not"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "created"}), "created is not"),
    ],
)
def test_a_bad_record_is_refused_naming_the_record_and_field_not_the_value(
    data: bytes, reason: str
) -> None:
    with pytest.raises(ValueError) as caught:
        decode("0123456789ab", data)
    message = str(caught.value)
    assert "'0123456789ab'" in message and reason in message
    assert "a" * 64 not in message and "yesterday" not in message


def test_names_are_printable_and_at_most_64_characters() -> None:
    assert check_name(None) is None
    assert check_name("x" * 64) == "x" * 64
    for bad in ("", "x" * 65, "tab\there", "bell\a", "esc\x1b[31m"):
        with pytest.raises(KeyNameError):
            check_name(bad)
    with pytest.raises(KeyNameError):
        new_key("new\nline", NOW)


# -- authentication ---------------------------------------------------------------


@pytest.fixture
def stored() -> tuple[dict[str, ClientKey], str, str]:
    """Two stored keys; the text of each."""
    first, first_text = new_key("a", NOW)
    second, second_text = new_key("b", NOW)
    return {first.id: first, second.id: second}, first_text, second_text


def test_the_right_key_authenticates_as_its_record(
    stored: tuple[dict[str, ClientKey], str, str],
) -> None:
    keys, first, second = stored
    assert authenticate(first, keys) == keys[first[3:15]]
    assert authenticate(second, keys) == keys[second[3:15]]


def test_a_wrong_secret_a_revoked_key_or_another_ids_secret_is_refused(
    stored: tuple[dict[str, ClientKey], str, str],
) -> None:
    keys, first, second = stored
    flipped = first[:-1] + ("A" if first[-1] != "A" else "B")
    assert authenticate(flipped, keys) is None
    # One key's id with another key's secret.
    assert authenticate(first[:16] + second[16:], keys) is None
    revoked = {k: v for k, v in keys.items() if k != first[3:15]}
    assert authenticate(first, revoked) is None
    assert authenticate(second, revoked) is not None
    assert authenticate(first, {}) is None


@pytest.mark.parametrize(
    "presented",
    [
        None,
        "",
        "mk_",
        "Bearer mk_0123456789ab_" + "A" * 43,
        "mk_0123456789AB_" + "A" * 43,  # upper-case id
        "mk_0123456789ab_" + "A" * 42,  # short secret
        "mk_0123456789ab_" + "A" * 44,  # long secret
        "mk_0123456789ab_" + "A" * 42 + "=",  # not base64url
        "mk_0123456789ab_" + "A" * 42 + "é",
        "mk_0123456789ab_" + "A" * 100_000,
        "mk_0123456789ab-" + "A" * 43,
    ],
)
def test_a_malformed_key_is_refused_without_a_lookup(presented: str | None) -> None:
    class Watched(dict[str, ClientKey]):
        def get(self, *args: object, **kwargs: object) -> ClientKey | None:
            raise AssertionError("looked up a malformed key")

    assert key_id(presented) is None
    assert authenticate(presented, Watched()) is None


def test_an_unknown_id_costs_a_hash_and_a_compare_like_a_known_one(
    stored: tuple[dict[str, ClientKey], str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing must not tell a stranger which ids exist: both paths do the same work."""
    keys, first, _ = stored
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def compare_digest(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(client_keys.hmac, "compare_digest", compare_digest)

    unknown = "mk_ffffffffffff_" + first[16:]
    assert unknown[3:15] not in keys
    wrong = first[:16] + "B" * 43

    assert authenticate(unknown, keys) is None
    assert authenticate(wrong, keys) is None
    assert authenticate(first, keys) is not None

    assert [a for a, _ in compared] == [hash_key(unknown), hash_key(wrong), hash_key(first)]
    expected = [b for _, b in compared]
    assert expected[1] == expected[2] == keys[first[3:15]].hash
    # The unknown id was compared with a hash that no stored key has, of the same length.
    assert len(expected[0]) == 64 and expected[0] not in {k.hash for k in keys.values()}
