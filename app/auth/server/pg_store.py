"""The authorization server's state in PostgreSQL (`auth.store: postgresql://...`), shared by every facade
instance that names the same database: a code, launch id or client-assertion `jti` used on one is spent on
all; a grant revoked on one is revoked on all.

The semantics are those of the SQLite and Redis stores (app/auth/server/store.py), each operation one
statement, atomic across processes and hosts:
- `take` is `DELETE ... RETURNING`: of several instances redeeming one code at once, exactly one gets it
  (the others wait on the row's lock, then find it gone);
- `add_once` is an `INSERT ... ON CONFLICT DO UPDATE ... WHERE <the existing row has expired>`: a fresh row
  or an expired one's replacement is reported, a live one is left alone (one winner, as above);
- `incr` is an upsert that adds one to a live counter or restarts an expired one.
Expiry is by the facade's clock (as with SQLite: keep the hosts' clocks synchronised, NTP); expired rows
are never returned and are purged at start and then at most once a minute by whichever write comes first.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from app.audit.postgres import StoreUnavailable, migrate, open_pool

KEY = "auth.store"
PURGE_INTERVAL_S = 60.0


class PostgresAuthStore:
    def __init__(self, url: str) -> None:
        self._pool = open_pool(url, KEY, "auth-state")
        try:
            migrate(self._pool, "auth", "app.auth.server", KEY)
        except BaseException:
            self._pool.close()
            raise
        self._next_purge = 0.0
        self._purge(time.time())

    def _run(self, sql: str, args: tuple[Any, ...]) -> Any:
        """One statement (autocommit: its own transaction); its first row, if it returns rows.
        StoreUnavailable when the server cannot be reached."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                cursor = conn.execute(sql, args)
                return cursor.fetchone() if cursor.description else None
        except (PoolTimeout, psycopg.OperationalError):
            raise StoreUnavailable("the authorization state") from None

    def _purge(self, now: float) -> None:
        """Delete expired rows, at most once per PURGE_INTERVAL_S in this process."""
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        self._run("DELETE FROM auth_state WHERE expires <= %s", (now,))

    def put(self, kind: str, key: str, value: dict[str, Any], ttl_s: float) -> None:
        now = time.time()
        self._purge(now)
        self._run(
            "INSERT INTO auth_state VALUES (%s, %s, %s::jsonb, %s) ON CONFLICT (kind, key) "
            "DO UPDATE SET value = EXCLUDED.value, expires = EXCLUDED.expires",
            (kind, key, orjson.dumps(value).decode(), now + ttl_s),
        )

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        row = self._run(
            "SELECT value::text FROM auth_state WHERE kind = %s AND key = %s AND expires > %s",
            (kind, key, time.time()),
        )
        return orjson.loads(row[0]) if row else None

    def take(self, kind: str, key: str) -> dict[str, Any] | None:
        row = self._run(
            "DELETE FROM auth_state WHERE kind = %s AND key = %s RETURNING value::text, expires", (kind, key)
        )
        return orjson.loads(row[0]) if row and row[1] > time.time() else None

    def add_once(self, kind: str, key: str, ttl_s: float, value: dict[str, Any] | None = None) -> bool:
        now = time.time()
        self._purge(now)
        row = self._run(
            "INSERT INTO auth_state AS s VALUES (%s, %s, %s::jsonb, %s) ON CONFLICT (kind, key) "
            "DO UPDATE SET value = EXCLUDED.value, expires = EXCLUDED.expires WHERE s.expires <= %s "
            "RETURNING 1",
            (kind, key, orjson.dumps(value or {}).decode(), now + ttl_s, now),
        )
        return row is not None

    def delete(self, kind: str, key: str) -> None:
        self._run("DELETE FROM auth_state WHERE kind = %s AND key = %s", (kind, key))

    def incr(self, kind: str, key: str, ttl_s: float) -> int:
        """Add one to a counter and return it; the counter lives `ttl_s` from its first count."""
        now = time.time()
        self._purge(now)
        row = self._run(
            "INSERT INTO auth_state AS s VALUES (%s, %s, '{\"n\": 1}'::jsonb, %s) ON CONFLICT (kind, key) "
            "DO UPDATE SET "
            "value = CASE WHEN s.expires > %s "
            "THEN jsonb_build_object('n', COALESCE((s.value->>'n')::bigint, 0) + 1) ELSE EXCLUDED.value END, "
            "expires = CASE WHEN s.expires > %s THEN s.expires ELSE EXCLUDED.expires END "
            "RETURNING (value->>'n')::bigint",
            (kind, key, now + ttl_s, now, now),
        )
        return int(row[0])

    def close(self) -> None:
        self._pool.close()
