"""Secrets and at-rest encryption: the API-key HMAC key and the photo key (AES-256-GCM)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.errors import InvalidInput, PhotoKeyMismatch
from service.settings import Settings

logger = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12


@dataclass(frozen=True)
class Secrets:
    api_key_hmac: bytes
    photo_key: bytes


def resolve_secrets(settings: Settings) -> Secrets:
    """Secrets from the settings, else from the secrets file (created once, mode 0600)."""
    stored = _secrets_file(settings) if not (settings.secret_key and settings.photo_key) else {}
    hmac_key = _decode(
        settings.secret_key.get_secret_value() if settings.secret_key else stored["secret_key"],
        "secret_key",
    )
    photo_key = _decode(
        settings.photo_key.get_secret_value() if settings.photo_key else stored["photo_key"],
        "photo_key",
    )
    return Secrets(api_key_hmac=hmac_key, photo_key=photo_key)


def new_key_text() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _decode(text: str, name: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError as err:
        raise InvalidInput(f"HOMEWARD_{name.upper()} is not base64") from err
    if len(key) != KEY_BYTES:
        raise InvalidInput(f"HOMEWARD_{name.upper()} must be {KEY_BYTES} bytes, base64-encoded")
    return key


def _secrets_file(settings: Settings) -> dict[str, str]:
    path = settings.secrets_file.expanduser().resolve()
    if path.is_relative_to(settings.data_dir.resolve()):
        raise InvalidInput(f"the secrets file {path} must not lie inside the data dir")
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text())
        return data
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"secret_key": new_key_text(), "photo_key": new_key_text()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    logger.warning(
        "created %s with new secrets: back it up; without it stored photos "
        "cannot be read and API keys must be re-issued",
        path,
    )
    return data


class Sealer:
    """AES-256-GCM with a random nonce; the associated data binds a blob to its name, so
    sealed files cannot be swapped for one another."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.fingerprint = hmac.new(key, b"homeward photo key", hashlib.sha256).hexdigest()[:16]

    def seal(self, data: bytes, name: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, name.encode())

    def open(self, blob: bytes, name: str) -> bytes:
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], name.encode())
        except InvalidTag as err:
            raise PhotoKeyMismatch(
                f"{name} cannot be decrypted: the photo key differs from the one it was stored "
                "with (or the file is damaged)"
            ) from err


def api_key_digest(hmac_key: bytes, key: str) -> str:
    return hmac.new(hmac_key, key.encode(), hashlib.sha256).hexdigest()


# -- the data dir is the service's alone -----------------------------------------------------

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` (made with its parents if missing) readable by the service's user only; a
    looser one is tightened, and that is logged."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    _tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """``path`` created empty if missing, readable by the service's user only."""
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    _tighten(path, PRIVATE_FILE)
    return path


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        logger.warning("%s was open to other users (mode %o); set to %o", path, current, mode)
        path.chmod(mode)
