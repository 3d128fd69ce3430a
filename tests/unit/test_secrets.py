"""libs/security/secrets.py: AES-GCM with key ids, bound to where the secret is stored."""

from __future__ import annotations

import base64

import pytest

from libs.security.secrets import SecretBox, SecretsError, parse_keys

OLD, NEW = b"o" * 32, b"n" * 32


def _spec(**keys: bytes) -> str:
    return ",".join(f"{k}:{base64.b64encode(v).decode()}" for k, v in keys.items())


def test_round_trip_and_rotation_keep_old_secrets_readable():
    old = SecretBox(parse_keys(_spec(k1=OLD)))
    key_id, blob = old.seal("tok", b"agent:t:1")
    assert key_id == "k1" and b"tok" not in blob
    rotated = SecretBox(parse_keys(_spec(k1=OLD, k2=NEW)), "k2")
    assert rotated.open(key_id, blob, b"agent:t:1") == "tok"
    assert rotated.seal("tok", b"c")[0] == "k2"
    assert rotated.seal("tok", b"c")[1] != rotated.seal("tok", b"c")[1]  # a fresh nonce each time


def test_a_moved_or_tampered_secret_does_not_decrypt():
    box = SecretBox(parse_keys(_spec(k1=OLD)))
    key_id, blob = box.seal("tok", b"agent:t:1")
    with pytest.raises(SecretsError, match="authenticate"):
        box.open(key_id, blob, b"agent:t:2")
    with pytest.raises(SecretsError, match="authenticate"):
        box.open(key_id, blob[:-1] + bytes([blob[-1] ^ 1]), b"agent:t:1")
    with pytest.raises(SecretsError, match="no key"):
        box.open("k9", blob, b"agent:t:1")


@pytest.mark.parametrize("spec", ["", "k1", "k1:short", "k1:not base64!", ":" + base64.b64encode(OLD).decode()])
def test_malformed_key_settings_are_refused(spec):
    with pytest.raises(SecretsError):
        parse_keys(spec)
