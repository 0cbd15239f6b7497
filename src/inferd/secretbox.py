"""Secrets at rest: replica credentials and webhook secrets, encrypted with a key from the
environment (``INFERD_SECRET_KEY``).

The value is one or more Fernet keys separated by commas, newest first (``inferd secrets
new-key`` makes one). The first key encrypts; every key is tried to decrypt (cryptography's
``MultiFernet``), so a new key can be put in front of the old one, ``inferd secrets rotate``
re-encrypts every stored secret with it, and the old key is then removed.

A stored value is either ``fernet:<token>`` or plaintext (written while no key was set).
Without a key, secrets are written in plaintext (a warning at start-up says so) and plaintext
ones are read as they are; an encrypted value then cannot be read, and the process refuses to
use it (``SecretKeyError``) instead of sending a wrong credential.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "fernet:"


class SecretKeyError(RuntimeError):
    """A stored secret cannot be decrypted with the configured ``INFERD_SECRET_KEY``."""


def new_key() -> str:
    """A fresh key for ``INFERD_SECRET_KEY``."""
    return Fernet.generate_key().decode()


def parse_keys(value: str) -> list[str]:
    """The keys of an ``INFERD_SECRET_KEY`` value; ``ValueError`` naming a malformed one."""
    keys = [k.strip() for k in value.replace("\n", ",").split(",") if k.strip()]
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise ValueError(f"secret_key: key {number} is not a Fernet key (32 url-safe "
                             "base64-encoded bytes; `inferd secrets new-key` makes one)") from None
    return keys


class SecretBox:
    """Encrypts secrets before they are stored and decrypts them when they are read."""

    def __init__(self, keys: list[str] | None = None) -> None:
        self._fernet = (MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None)

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        return cls(parse_keys(value))

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    def seal(self, plain: str) -> str:
        """What to store for ``plain`` (encrypted when a key is set)."""
        if self._fernet is None or not plain:
            return plain
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret a stored value holds."""
        if not stored.startswith(PREFIX):
            return stored
        if self._fernet is None:
            raise SecretKeyError("The database holds encrypted secrets but INFERD_SECRET_KEY "
                                 "is not set: set it to the key they were encrypted with.")
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretKeyError("A stored secret does not decrypt with any key of "
                                 "INFERD_SECRET_KEY: add the key it was encrypted with "
                                 "(after the new one) and run `inferd secrets rotate`.") from None

    def rotate(self, stored: str) -> str:
        """``stored`` encrypted with the first key (plaintext is encrypted too)."""
        if self._fernet is None:
            raise SecretKeyError("INFERD_SECRET_KEY is not set: there is no key to encrypt with.")
        if not stored.startswith(PREFIX):
            return self.seal(stored)
        try:
            return PREFIX + self._fernet.rotate(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretKeyError("A stored secret does not decrypt with any key of "
                                 "INFERD_SECRET_KEY: keep the old key after the new one "
                                 "while rotating.") from None
