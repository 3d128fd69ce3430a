"""Secrets at rest: AES-256-GCM under a named key, so keys rotate (ciphertexts keep the id that decrypts them).

Keys come from settings: `WEFT_SECRETS_KEYS` lists `id:base64(32 bytes)` pairs, comma-separated;
`WEFT_SECRETS_KEY_ID` names the one new secrets are sealed with (default: the first listed). A ciphertext is
`nonce (12 bytes) || ciphertext+tag`, bound by associated data to where it is stored (a tenant and row id),
so a copied blob does not decrypt in another row. The one place secrets are sealed: agents' auth secrets
(docs/decisions/0101) and connected accounts' OAuth tokens (docs/decisions/0072).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class SecretsError(Exception):
    """A key setting is malformed, a key id is unknown, or a ciphertext does not authenticate."""


def parse_keys(spec: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key_id, sep, encoded = part.partition(":")
        try:
            key = base64.b64decode(encoded, validate=True) if sep else b""
        except (binascii.Error, ValueError):
            key = b""
        if not key_id or len(key) != 32:
            raise SecretsError(f"WEFT_SECRETS_KEYS: {key_id or part!r} must be id:base64 of 32 random bytes")
        keys[key_id] = key
    if not keys:
        raise SecretsError("WEFT_SECRETS_KEYS lists no key")
    return keys


class SecretBox:
    def __init__(self, keys: dict[str, bytes], active: str = "") -> None:
        self.keys = keys
        self.active = active or next(iter(keys))
        if self.active not in keys:
            raise SecretsError(f"WEFT_SECRETS_KEY_ID {self.active!r} is not in WEFT_SECRETS_KEYS")

    @classmethod
    def from_settings(cls, settings) -> SecretBox:
        return cls(parse_keys(settings.secrets_keys), settings.secrets_key_id)

    def seal(self, plaintext: str, context: str | bytes) -> tuple[str, bytes]:
        """(key id, nonce || ciphertext) of `plaintext`, bound to `context` (where it is stored)."""
        context = context.encode() if isinstance(context, str) else context
        nonce = os.urandom(NONCE_BYTES)  # random 96-bit nonces: safe far beyond any count of secrets we store
        return self.active, nonce + AESGCM(self.keys[self.active]).encrypt(nonce, plaintext.encode(), context)

    def open(self, key_id: str, blob: bytes, context: str | bytes) -> str:
        context = context.encode() if isinstance(context, str) else context
        key = self.keys.get(key_id)
        if key is None:
            raise SecretsError(f"no key {key_id!r} in WEFT_SECRETS_KEYS to decrypt this secret")
        try:
            return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context).decode()
        except (InvalidTag, ValueError) as exc:
            raise SecretsError("the secret does not authenticate (wrong key, or moved from another row)") from exc
