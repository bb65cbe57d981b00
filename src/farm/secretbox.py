"""Secrets at rest (issue 10): brokers' keys encrypted with the server's key.

The server's key is ``FARM_SECRET_KEY`` (any string; a Fernet key is derived from it). In the
embedded shape, when it is unset, a random one is generated once into ``FARM_HOME/secret.key``
(mode 0600); scaled out (``FARM_REDIS_URL`` or a PostgreSQL database, see
:attr:`~farm.config.Settings.scaled_out`) it is required, so every process agrees. The API and
paper processes build their box once, at start (:meth:`farm.context.Context.start`), so a
missing key stops them there rather than at the first request.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from farm.config import Settings
from farm.errors import InvalidInput

KEY_FILE = "secret.key"


class MissingSecretKey(RuntimeError):
    """Scaled out without ``FARM_SECRET_KEY``: a configuration error, raised at start."""


class SecretBox:
    """Encrypts and decrypts short secrets with the server's key (Fernet: AES-128-CBC and
    HMAC-SHA256, authenticated)."""

    def __init__(self, server_key: str) -> None:
        digest = hashlib.sha256(server_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The platform's box (see the module doc)."""
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value())
        if settings.scaled_out:
            raise MissingSecretKey(
                "FARM_SECRET_KEY must be set when scaled out (FARM_REDIS_URL or a PostgreSQL "
                "FARM_DATABASE_URL): every process must decrypt the same broker keys"
            )
        return cls(_home_key(settings.home))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise InvalidInput(
                "a stored broker key cannot be decrypted: FARM_SECRET_KEY changed"
            ) from None


def _home_key(home: Path) -> str:
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as out:
            out.write(Fernet.generate_key().decode())
    return path.read_text().strip()
