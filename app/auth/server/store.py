"""Short-lived authorization state: codes, launch ids, refresh tokens, revocations, seen `jti`s.

SQLite is the embedded default; Redis (``auth.store: redis://...``) lets several facade processes
behind a load balancer share the state, so a `jti` used on one is refused on the other and a token
revoked on one fails on the other. Every operation that must happen once (`take`, `add_once`) is
atomic in both.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import orjson


class AuthStore(Protocol):
    def put(self, kind: str, key: str, value: dict[str, Any], ttl_s: float) -> None: ...
    def get(self, kind: str, key: str) -> dict[str, Any] | None: ...
    def take(self, kind: str, key: str) -> dict[str, Any] | None: ...
    def add_once(self, kind: str, key: str, ttl_s: float) -> bool: ...
    def delete(self, kind: str, key: str) -> None: ...


class SqliteAuthStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS auth_state (
            kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires REAL NOT NULL,
            PRIMARY KEY (kind, key))""")

    def put(self, kind: str, key: str, value: dict[str, Any], ttl_s: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO auth_state VALUES (?, ?, ?, ?)",
                (kind, key, orjson.dumps(value), time.time() + ttl_s),
            )

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM auth_state WHERE kind = ? AND key = ? AND expires > ?", (kind, key, time.time())
            ).fetchone()
        return orjson.loads(row[0]) if row else None

    def take(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT value, expires FROM auth_state WHERE kind = ? AND key = ?", (kind, key)
                ).fetchone()
                self._db.execute("DELETE FROM auth_state WHERE kind = ? AND key = ?", (kind, key))
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise
        return orjson.loads(row[0]) if row and row[1] > time.time() else None

    def add_once(self, kind: str, key: str, ttl_s: float) -> bool:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM auth_state WHERE kind = ? AND key = ? AND expires <= ?", (kind, key, now))
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO auth_state VALUES (?, ?, ?, ?)", (kind, key, b"{}", now + ttl_s)
                )
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise
        return cursor.rowcount == 1

    def delete(self, kind: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM auth_state WHERE kind = ? AND key = ?", (kind, key))


class RedisAuthStore:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)

    @staticmethod
    def _key(kind: str, key: str) -> str:
        return f"gmfacade:{kind}:{key}"

    def put(self, kind: str, key: str, value: dict[str, Any], ttl_s: float) -> None:
        self._redis.set(self._key(kind, key), orjson.dumps(value), px=max(int(ttl_s * 1000), 1))

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        found = self._redis.get(self._key(kind, key))
        return orjson.loads(found) if found else None

    def take(self, kind: str, key: str) -> dict[str, Any] | None:
        found = self._redis.getdel(self._key(kind, key))
        return orjson.loads(found) if found else None

    def add_once(self, kind: str, key: str, ttl_s: float) -> bool:
        return bool(self._redis.set(self._key(kind, key), b"{}", nx=True, px=max(int(ttl_s * 1000), 1)))

    def delete(self, kind: str, key: str) -> None:
        self._redis.delete(self._key(kind, key))


def open_store(spec: str, base_dir: Path) -> AuthStore:
    """`redis://...` or `sqlite:<path>` (relative to the configuration file)."""
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisAuthStore(spec)
    path = Path(spec.removeprefix("sqlite:"))
    return SqliteAuthStore(path if path.is_absolute() else base_dir / path)
