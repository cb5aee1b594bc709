"""The embedded server's signing keys: the first signs, all are published (so rotation is safe).

Kept as private JWKs in one JSON file (readable by its owner only), created on first start.
`python -m app rotate-keys CONFIG` puts a new key first and keeps the others published, so tokens
signed before stay valid; `python -m app rotate-keys CONFIG --retire KID` removes a key once no token
signed with it should be accepted any more.

Every process of a running server picks the change up by itself, without a restart: when keys are
asked for, the file is stat()ed at most once per CHECK_INTERVAL_S and read again only when it is
another file or has changed. The hot path (signing, verifying a token) costs a clock read.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet, RSAKey

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


class UnknownKey(Exception):
    """No key with that kid in the file."""


class RetireRefused(Exception):
    """The key may not be retired: the server would be left without a key to sign with."""


def _new_key(taken: set[str]) -> RSAKey:
    while True:
        kid = secrets.token_urlsafe(8)
        # Never "-..." (1 in 64): `rotate-keys --retire KID` would read such a kid as an option.
        if kid not in taken and not kid.startswith("-"):
            return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"})


def _version(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one state of the file from another: a rotation replaces the file (new inode); the
    times and size guard against an inode number being reused by a later replacement."""
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


@dataclass(frozen=True)
class _Snapshot:
    """The keys as one read of the file found them (replaced whole, so readers need no lock)."""

    keys: tuple[RSAKey, ...]
    key_set: KeySet
    public: dict[str, Any]
    version: tuple[int, int, int, int]


def _parse(text: str | bytes) -> list[RSAKey]:
    keys = [RSAKey.import_key(k) for k in json.loads(text)["keys"]]
    if not keys:
        raise ValueError("the file holds no key")
    return keys


class SigningKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create([_new_key(set())])
        self._snapshot = self._read()
        self._next_check = time.monotonic() + CHECK_INTERVAL_S

    def _read(self) -> _Snapshot:
        with self.path.open("rb") as handle:
            # The version of the open file: exactly what was read, even if it is replaced meanwhile.
            version = _version(os.fstat(handle.fileno()))
            keys = _parse(handle.read())
        return _Snapshot(
            tuple(keys), KeySet(list[Key](keys)), {"keys": [k.as_dict(private=False) for k in keys]}, version
        )

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

    def _update(self, change: Callable[[list[RSAKey]], list[RSAKey]]) -> list[RSAKey]:
        """Read, change and replace the file, holding an exclusive lock on it: two `rotate-keys` at
        once must not each write the file without the other's change. Readers never lock: the file
        is replaced whole (rename), never written in place."""
        while True:
            with self.path.open("rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                if os.fstat(handle.fileno()).st_ino != self.path.stat().st_ino:
                    continue  # replaced while this process waited for the lock: lock the new file
                keys = change(_parse(handle.read()))
                self._staged(keys).replace(self.path)
            with self._lock:
                self._snapshot = self._read()
                self._next_check = time.monotonic() + CHECK_INTERVAL_S
            return keys

    def _fresh(self) -> _Snapshot:
        """The keys, read again when another process changed the file (checked once a second at most)."""
        now = time.monotonic()
        if now < self._next_check:
            return self._snapshot
        with self._lock:
            if now >= self._next_check:  # not already checked by another thread meanwhile
                self._next_check = now + CHECK_INTERVAL_S
                try:
                    if _version(self.path.stat()) != self._snapshot.version:
                        self._snapshot = self._read()
                except (OSError, ValueError, KeyError, JoseError) as exc:
                    # A missing or broken file must not take signing down: keep the keys in use.
                    log.warning("signing keys %s not reloaded (%s): the keys in use are kept", self.path, exc)
            return self._snapshot

    @property
    def current(self) -> RSAKey:
        return self._fresh().keys[0]

    def kids(self) -> list[str]:
        return [str(k.kid) for k in self._fresh().keys]

    def public_jwks(self) -> dict[str, Any]:
        """The published JWKS (shared: not to be modified)."""
        return self._fresh().public

    def key_set(self, kid: str | None = None) -> KeySet:
        """Every published key, for verification (the same object until the file changes; `kid` is
        not needed: all keys are at hand)."""
        return self._fresh().key_set

    def rotate(self) -> str:
        """A new signing key, first; the others stay published. Its kid."""
        keys = self._update(lambda keys: [_new_key({str(k.kid) for k in keys}), *keys])
        return str(keys[0].kid)

    def retire(self, kid: str) -> list[str]:
        """Remove a key that no longer signs; the kids still published. UnknownKey, or RetireRefused
        for the current signing key (the only key included)."""

        def without(keys: list[RSAKey]) -> list[RSAKey]:
            kids = [str(k.kid) for k in keys]
            if kid not in kids:
                raise UnknownKey(f"no signing key {kid!r} in {self.path} (its keys: {', '.join(kids)})")
            if len(keys) == 1:
                raise RetireRefused(f"key {kid} is the only signing key: run rotate-keys first")
            if kids[0] == kid:
                raise RetireRefused(
                    f"key {kid} is the current signing key: run rotate-keys first, "
                    "and retire it once the tokens it signed have expired"
                )
            return [k for k in keys if k.kid != kid]

        return [str(k.kid) for k in self._update(without)]
