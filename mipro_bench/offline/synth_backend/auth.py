"""Who may call the local backend, and the task-app keys clients upload to it.

Synth's routes take the API key two ways (submit: `X-API-Key`; poll, events
and the older routes: `Authorization: Bearer`); both are accepted everywhere
here. The SDK uploads the task app's ENVIRONMENT_API_KEY sealed to the
backend's public key (libsodium sealed box, `GET /api/v1/crypto/public-key`
then `POST /api/v1/env-keys`); this module holds the key pair and the
decrypted keys, per API key, so the rollouts of a job present the key of the
client that submitted it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
from collections.abc import Iterable, Mapping

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

SEALED_BOX_ALG = "libsodium.sealedbox.v1"
MAX_ENV_KEY_BYTES = 8 * 1024


class AuthError(Exception):
    """Missing or unknown API key (answered 401)."""


class EnvKeyError(ValueError):
    """An env-key upload that cannot be used (answered 400)."""


def new_api_key() -> str:
    return f"sk_local_{secrets.token_hex(16)}"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: X-API-Key first, else a Bearer token."""
    key = (headers.get("x-api-key") or "").strip()
    if key:
        return key
    auth = headers.get("authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


class KeyRing:
    def __init__(self, api_keys: Iterable[str]) -> None:
        self._api_keys = tuple(k for k in api_keys if k)
        if not self._api_keys:
            raise ValueError("the local backend needs at least one API key")
        self._private = PrivateKey.generate()
        self._env_keys: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    @property
    def api_keys(self) -> tuple[str, ...]:
        return self._api_keys

    def check(self, headers: Mapping[str, str]) -> str:
        """The caller's API key if it is one of ours, else AuthError."""
        key = presented_key(headers)
        if not key:
            raise AuthError("missing API key: send X-API-Key or Authorization: Bearer <key>")
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in self._api_keys):
            raise AuthError("invalid API key for this local Synth backend")
        return key

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(bytes(self._private.public_key)).decode("ascii")

    def store_sealed(self, owner: str, name: str, ciphertext_b64: str) -> None:
        if not name or len(name) > 128:
            raise EnvKeyError("name must be a non-empty string of at most 128 characters")
        try:
            sealed = base64.b64decode(ciphertext_b64, validate=True)
        except (binascii.Error, ValueError):
            raise EnvKeyError("ciphertext_b64 is not valid base64") from None
        try:
            plain = SealedBox(self._private).decrypt(sealed)
        except CryptoError:
            raise EnvKeyError(
                "ciphertext_b64 does not open with this backend's public key "
                "(sealed to another key?)"
            ) from None
        if not plain or len(plain) > MAX_ENV_KEY_BYTES:
            raise EnvKeyError(f"the sealed value must be 1..{MAX_ENV_KEY_BYTES} bytes")
        try:
            value = plain.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvKeyError("the sealed value is not UTF-8 text") from None
        with self._lock:
            self._env_keys.setdefault(owner, {})[name] = value

    def env_key(self, owner: str, name: str = "ENVIRONMENT_API_KEY") -> str | None:
        with self._lock:
            return self._env_keys.get(owner, {}).get(name)
