"""Secrets at rest: every stored secret (a shop's CCV key pair, Asperion credentials, licence
code, debtor-register key) is sealed with a key derived from ``MAPPER_MASTER_KEY``.

Sealing is the ``cryptography`` package's Fernet (AES-128-CBC with HMAC-SHA256, a timestamp
and a version byte): authenticated, so a row changed or sealed under another key is refused,
never decrypted to garbage. The Fernet key is derived from the master key with HKDF-SHA256, so
the master key can be any long random text (``secrets.token_urlsafe(32)``).

Rotation: put the old master key(s) in ``MAPPER_MASTER_KEY_OLD`` (comma-separated) and the new
one in ``MAPPER_MASTER_KEY``; everything still opens, and :meth:`SecretBox.reseal` (``mapper
shops reseal``) seals each row again under the new key, after which the old one can go.
"""

from __future__ import annotations

import base64
import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.errors import ConfigError

__all__ = ["MIN_KEY_LENGTH", "SecretBox", "SealedSecretError"]

MIN_KEY_LENGTH = 32
_INFO = b"mapper: secrets at rest v1"


class SealedSecretError(ConfigError):
    """A stored secret cannot be opened with the master key(s) given."""


def _fernet(master: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master.encode())
    return Fernet(base64.urlsafe_b64encode(key))


class SecretBox:
    def __init__(self, master_key: str, old_keys: tuple[str, ...] = ()):
        for name, key in (("MAPPER_MASTER_KEY", master_key),
                          *(("MAPPER_MASTER_KEY_OLD", k) for k in old_keys)):
            if len(key) < MIN_KEY_LENGTH:
                raise ConfigError(
                    f"{name} is too short ({len(key)} characters, at least {MIN_KEY_LENGTH})",
                    hint="make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        self._current = _fernet(master_key)
        self._master = master_key.encode()
        self._all = MultiFernet([self._current, *(_fernet(k) for k in old_keys)])

    @classmethod
    def from_env(cls, environ: "os._Environ[str] | dict[str, str] | None" = None) -> "SecretBox":
        env = os.environ if environ is None else environ
        master = env.get("MAPPER_MASTER_KEY", "")
        if not master:
            raise ConfigError("MAPPER_MASTER_KEY is not set: hosted mode seals every stored "
                              "secret with it",
                              hint="make one with: python -c 'import secrets; "
                                   "print(secrets.token_urlsafe(32))' and keep it safe")
        old = tuple(k.strip() for k in env.get("MAPPER_MASTER_KEY_OLD", "").split(",") if k.strip())
        return cls(master, old)

    def signing_key(self, purpose: str) -> bytes:
        """A key of its own for ``purpose`` (the install form's tokens, the operator's session
        cookie), derived from the master key: knowing one reveals neither the master key nor
        the sealing key."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"mapper: " + purpose.encode()).derive(self._master)

    def seal(self, plain: str) -> str:
        return self._current.encrypt(plain.encode("utf-8")).decode("ascii")

    def open(self, sealed: str, what: str = "a stored secret") -> str:
        try:
            return self._all.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError, UnicodeError):
            raise SealedSecretError(
                f"cannot open {what}: it was sealed with another MAPPER_MASTER_KEY",
                hint="set the key it was sealed with in MAPPER_MASTER_KEY (or, while rotating, "
                     "in MAPPER_MASTER_KEY_OLD)") from None

    def reseal(self, sealed: str, what: str = "a stored secret") -> str:
        """The same secret sealed under the current key (a no-op in meaning)."""
        try:
            return self._all.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise SealedSecretError(f"cannot reseal {what}: no MAPPER_MASTER_KEY opens it") from None
