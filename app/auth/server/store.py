"""Short-lived authorization state: codes, launch ids, refresh tokens, revocations, seen `jti`s,
login sessions and sign-in failure counters.

SQLite is the embedded default; Redis (``auth.store: redis://...``) or PostgreSQL (``auth.store:
postgresql://...``, app/auth/server/pg_store.py) lets several facade processes behind a load balancer
share the state, so a `jti` used on one is refused on the other and a token revoked on one fails on
the other. Every operation that must happen once (`take`, `add_once`, `incr`) is atomic in all three.

Everything kept has an expiry: Redis drops a key when its time is up; SQLite rows are purged (at
start and then at most once a minute, by whichever write comes first). The SQLite file and its WAL
are readable by their owner only (0600). Secrets are kept only as their hashes (`secret_key`):
codes, refresh tokens, launch ids and session ids are looked up by a hash, never stored in clear.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import orjson

from app.audit.postgres import is_postgres
from app.audit.store import private_file

PURGE_INTERVAL_S = 60.0


def secret_key(secret: str) -> str:
    """The store key of a bearer secret (code, refresh token, launch id, session id): its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()


class AuthStore(Protocol):
    def put(self, kind: str, key: str, value: dict[str, Any], ttl_s: float) -> None: ...
    def get(self, kind: str, key: str) -> dict[str, Any] | None: ...
    def take(self, kind: str, key: str) -> dict[str, Any] | None: ...
    def add_once(self, kind: str, key: str, ttl_s: float, value: dict[str, Any] | None = None) -> bool: ...
    def delete(self, kind: str, key: str) -> None: ...
    def incr(self, kind: str, key: str, ttl_s: float) -> int: ...


class SqliteAuthStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The database and its WAL and shared-memory files hold token hashes and patient context: the owner's only.
        private_file(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS auth_state (
            kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires REAL NOT NULL,
            PRIMARY KEY (kind, key))""")
        self._db.execute("CREATE INDEX IF NOT EXISTS auth_state_expires ON auth_state (expires)")
        self._next_purge = 0.0
        with self._lock:
            self._purge(time.time())

    def _purge(self, now: float) -> None:
        """Delete expired rows, at most once per PURGE_INTERVAL_S (the lock is held)."""
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        self._db.execute("DELETE FROM auth_state WHERE expires <= ?", (now,))

    def put(self, kind: str, key: str, value: dict[str, Any], ttl_s: float) -> None:
        now = time.time()
        with self._lock:
            self._purge(now)
            self._db.execute(
                "INSERT OR REPLACE INTO auth_state VALUES (?, ?, ?, ?)",
                (kind, key, orjson.dumps(value), now + ttl_s),
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

    def add_once(self, kind: str, key: str, ttl_s: float, value: dict[str, Any] | None = None) -> bool:
        now = time.time()
        with self._lock:
            self._purge(now)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM auth_state WHERE kind = ? AND key = ? AND expires <= ?", (kind, key, now))
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO auth_state VALUES (?, ?, ?, ?)",
                    (kind, key, orjson.dumps(value or {}), now + ttl_s),
                )
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise
        return cursor.rowcount == 1

    def delete(self, kind: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM auth_state WHERE kind = ? AND key = ?", (kind, key))

    def incr(self, kind: str, key: str, ttl_s: float) -> int:
        """Add one to a counter and return it; the counter lives `ttl_s` from its first count."""
        now = time.time()
        with self._lock:
            self._purge(now)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT value, expires FROM auth_state WHERE kind = ? AND key = ? AND expires > ?",
                    (kind, key, now),
                ).fetchone()
                count = int(orjson.loads(row[0]).get("n", 0)) + 1 if row else 1
                expires = row[1] if row else now + ttl_s
                self._db.execute(
                    "INSERT OR REPLACE INTO auth_state VALUES (?, ?, ?, ?)",
                    (kind, key, orjson.dumps({"n": count}), expires),
                )
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise
        return count


class RedisAuthStore:
    """Every key is written with an expiry (PX): Redis itself purges what is no longer valid."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)

    @staticmethod
    def _key(kind: str, key: str) -> str:
        return f"gmfacade:{kind}:{key}"

    @staticmethod
    def _ms(ttl_s: float) -> int:
        return max(int(ttl_s * 1000), 1)

    def put(self, kind: str, key: str, value: dict[str, Any], ttl_s: float) -> None:
        self._redis.set(self._key(kind, key), orjson.dumps(value), px=self._ms(ttl_s))

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        found = self._redis.get(self._key(kind, key))
        return orjson.loads(found) if found else None

    def take(self, kind: str, key: str) -> dict[str, Any] | None:
        found = self._redis.getdel(self._key(kind, key))
        return orjson.loads(found) if found else None

    def add_once(self, kind: str, key: str, ttl_s: float, value: dict[str, Any] | None = None) -> bool:
        return bool(self._redis.set(self._key(kind, key), orjson.dumps(value or {}), nx=True, px=self._ms(ttl_s)))

    def delete(self, kind: str, key: str) -> None:
        self._redis.delete(self._key(kind, key))

    def incr(self, kind: str, key: str, ttl_s: float) -> int:
        name = self._key(kind, key)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(name, 0, nx=True, px=self._ms(ttl_s))  # the expiry is set with the first count; INCR keeps it
        pipe.incr(name)
        return int(pipe.execute()[1])


def open_store(spec: str) -> AuthStore:
    """`redis://...`, `postgresql://...` or `sqlite:<absolute path>` (the settings resolve a relative one)."""
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisAuthStore(spec)
    if is_postgres(spec):
        from app.auth.server.pg_store import PostgresAuthStore

        return PostgresAuthStore(spec)
    return SqliteAuthStore(Path(spec.removeprefix("sqlite:")))
