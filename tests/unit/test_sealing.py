"""Sealed secrets: AES-GCM with a key id, bound to their row, opened by an old key after a rotation."""

from __future__ import annotations

import base64

import pytest

from libs.events.settings import load_settings
from libs.security.sealing import Keyring, SealError

K1, K2 = base64.b64encode(b"1" * 32).decode(), base64.b64encode(b"2" * 32).decode()


def test_seal_opens_with_its_key_and_context_only():
    ring = Keyring.from_settings(load_settings({}, connections_key=K1, connections_key_id="k1"))
    key_id, blob = ring.seal("ya29.secret", "t/alice/google/access")
    assert key_id == "k1" and b"ya29" not in blob
    assert ring.open(key_id, blob, "t/alice/google/access") == "ya29.secret"
    with pytest.raises(SealError, match="does not open"):
        ring.open(key_id, blob, "t/bob/google/access")  # copied into another user's row
    assert ring.seal("ya29.secret", "c")[1] != ring.seal("ya29.secret", "c")[1]  # a fresh nonce each time


def test_rotation_keeps_old_values_readable_and_seals_with_the_new_key():
    old = Keyring.from_settings(load_settings({}, connections_key=K1, connections_key_id="k1"))
    key_id, blob = old.seal("refresh", "ctx")
    rotated = Keyring.from_settings(load_settings({}, connections_key=K2, connections_key_id="k2",
                                                  connections_old_keys=f"k1:{K1}"))
    assert rotated.open(key_id, blob, "ctx") == "refresh" and rotated.seal("x", "ctx")[0] == "k2"
    dropped = Keyring.from_settings(load_settings({}, connections_key=K2, connections_key_id="k2"))
    with pytest.raises(SealError, match="no key with id 'k1'"):
        dropped.open(key_id, blob, "ctx")


def test_bad_keys_are_refused():
    for key in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(SealError):
            Keyring.from_settings(load_settings({}, connections_key=key))
