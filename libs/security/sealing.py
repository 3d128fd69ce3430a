"""Secrets at rest (connected accounts' OAuth tokens): AES-256-GCM with a key id, so keys can rotate.

A sealed value is nonce (12 bytes) || ciphertext+tag, stored next to the id of the key that sealed it. The
associated data binds it to its row (tenant, user, provider, which token), so a ciphertext copied into another
row does not open. Old keys stay configured until every value sealed with them has been resealed.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from libs.events.settings import Settings

NONCE_BYTES = 12


class SealError(Exception):
    pass


def _key(raw: str, name: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SealError(f"{name} must be base64") from None
    if len(key) != 32:
        raise SealError(f"{name} must be 32 bytes (AES-256), got {len(key)}")
    return key


class Keyring:
    def __init__(self, current_id: str, keys: dict[str, bytes]) -> None:
        if current_id not in keys:
            raise SealError(f"no key with id {current_id!r}")
        self.current_id, self._aead = current_id, {kid: AESGCM(key) for kid, key in keys.items()}

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        keys = {settings.connections_key_id: _key(settings.connections_key, "WEFT_CONNECTIONS_KEY")}
        for entry in filter(None, (e.strip() for e in settings.connections_old_keys.split(","))):
            kid, _, raw = entry.partition(":")
            keys.setdefault(kid.strip(), _key(raw, f"WEFT_CONNECTIONS_OLD_KEYS ({kid.strip()})"))
        return cls(settings.connections_key_id, keys)

    def seal(self, plaintext: str, context: str) -> tuple[str, bytes]:
        """(key id, nonce || ciphertext) of `plaintext`, bound to `context`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self.current_id].encrypt(nonce, plaintext.encode(), context.encode())
        return self.current_id, nonce + sealed

    def open(self, key_id: str, blob: bytes, context: str) -> str:
        aead = self._aead.get(key_id)
        if aead is None:
            raise SealError(f"no key with id {key_id!r} is configured (was it rotated out too early?)")
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode()).decode()
        except InvalidTag:
            raise SealError("sealed value does not open (wrong key or row)") from None
