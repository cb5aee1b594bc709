"""The embedded server's signing keys: the first signs, all are published (so rotation is safe).

Kept as private JWKs in one JSON file, created on first start. `python -m app rotate-keys CONFIG`
puts a new key first and keeps the previous one published until tokens it signed have expired.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet, RSAKey

KEEP = 2


def _new_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": secrets.token_urlsafe(8), "use": "sig"})


class SigningKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: list[RSAKey] = []
        self._mtime = 0.0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create([_new_key()])
        stat = self.path.stat()
        data = json.loads(self.path.read_text())
        self._keys = [RSAKey.import_key(k) for k in data["keys"]]
        self._mtime = stat.st_mtime

    def _staged(self, keys: list[RSAKey]) -> Path:
        """The key file written under a name of this process's own, readable by the owner only."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"keys": [k.as_dict(private=True) for k in keys]}))
        return tmp

    def _create(self, keys: list[RSAKey]) -> None:
        """First start: exactly one process creates the file (several workers may start at once); the
        others find it there and use its keys, so every worker signs and verifies with the same key."""
        tmp = self._staged(keys)
        try:
            os.link(tmp, self.path)  # atomic, and fails when the file exists
        except FileExistsError:
            pass
        finally:
            tmp.unlink()

    def _write(self, keys: list[RSAKey]) -> None:
        self._staged(keys).replace(self.path)

    def _fresh(self) -> list[RSAKey]:
        """Reload when another process rotated the file."""
        with self._lock:
            try:
                if self.path.stat().st_mtime != self._mtime:
                    self._load()
            except OSError:
                pass
            return self._keys

    @property
    def current(self) -> RSAKey:
        return self._fresh()[0]

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self._fresh()]}

    def key_set(self) -> KeySet:
        return KeySet(self._fresh())  # type: ignore[arg-type]

    def rotate(self) -> str:
        with self._lock:
            keys = [_new_key(), *self._keys][:KEEP]
            self._write(keys)
        self._load()
        return str(keys[0].kid)
