"""The audit trail in PostgreSQL (`audit.url: postgresql://...`): one trail for every facade instance.

Each write is committed (synchronous_commit as the server has it: on by default) before `write` returns, so
before the response leaves; concurrent requests' events share one transaction (GroupCommit). Searches are
those of the SQLite store (app/audit/store.py), with the same columns and byte-order comparisons
(COLLATE "C"), so the same pages in the same order.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.audit.postgres import StoreUnavailable, migrate, open_pool
from app.audit.store import AuditRow, GroupCommit, audit_rows, where_clause

KEY = "audit.url"


class PostgresAuditStore:
    """AuditEvents in the `audit_event` table (app/audit/migrations/), through a small connection pool."""

    def __init__(self, url: str) -> None:
        self._pool = open_pool(url, KEY, "audit")
        try:
            migrate(self._pool, "audit", "app.audit", KEY)
        except BaseException:
            self._pool.close()
            raise
        self.group = GroupCommit(self._commit)

    def _run(self, sql: str, args: tuple[Any, ...] | list[Any] = (), *, many: list[Any] | None = None) -> Any:
        """Run one statement (or one batch, in one transaction); StoreUnavailable when the server is gone."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                if many is not None:
                    with conn.transaction(), conn.cursor() as cursor:
                        cursor.executemany(sql, many)
                    return None
                return conn.execute(sql, args).fetchall()
        except (PoolTimeout, psycopg.OperationalError):
            raise StoreUnavailable("the audit trail") from None

    def write(self, events: list[dict[str, Any]], client_id: str | None) -> None:
        """Commit the events before returning (with those of concurrent requests: GroupCommit); the caller
        then answers."""
        self.group.write(audit_rows(events, client_id))

    def _commit(self, rows: list[AuditRow]) -> None:
        self._run("INSERT INTO audit_event VALUES (%s, %s, %s, %s, %s, %s)", many=rows)

    def search(
        self,
        patient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        client_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """One page of events, newest first (a stable order: recorded time, then id)."""
        where, args = where_clause(patient, since, until, client_id, "%s")
        rows = self._run(
            f"SELECT body FROM audit_event {where} ORDER BY recorded DESC, id LIMIT %s OFFSET %s",
            (*args, limit, offset),
        )
        return [orjson.loads(r[0]) for r in rows]

    def count(
        self,
        patient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        client_id: str | None = None,
    ) -> int:
        where, args = where_clause(patient, since, until, client_id, "%s")
        return int(self._run(f"SELECT COUNT(*) FROM audit_event {where}", args)[0][0])

    def writable(self) -> bool:
        """True when an event could be committed now: the lock an INSERT takes is taken (without waiting),
        then let go unused. False on a read-only server (a standby) or without the INSERT privilege."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection(timeout=2.0) as conn, conn.transaction(force_rollback=True):
                conn.execute("LOCK TABLE audit_event IN ROW EXCLUSIVE MODE NOWAIT")
            return True
        except (PoolTimeout, psycopg.Error):
            return False

    def close(self) -> None:
        self._pool.close()
