"""PostgreSQL for the facade's state (the audit trail, the authorization server's state): connection pools
and versioned schema migrations, shared by app.audit.pg_store and app.auth.server.pg_store.

Migrations are numbered SQL files in a package's `migrations/` folder (`0001_<what>.sql`, ...), one
sequence per component (`audit`, `auth`); the table `schema_version` records how far each component's
schema is. Every start applies what is missing, all in one transaction under a transaction-level advisory
lock (`pg_advisory_xact_lock`): instances starting together wait for each other, and the second finds the
work done. A database whose schema is newer than this code knows is refused (an older facade started
against an upgraded database).

Credentials: the URL names the server and database; its password may be written in it, or (better) left
out and given to libpq the usual ways: the `PGPASSWORD` environment variable or a `PGPASSFILE`.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from app.core.errors import FhirError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# One key for every component's migrations (the value is arbitrary; "gm-facade" as bytes, truncated).
MIGRATION_LOCK = 0x676D2D666163
POOL_MIN = 1
POOL_MAX = 8  # per store and worker process: gunicorn's default 8 threads each may hold one
CONNECT_TIMEOUT_S = 10.0  # the first connection at start
POOL_WAIT_S = 5.0  # a request waiting for a pooled connection (the server gone: 503 after this long)
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class StoreUnavailable(FhirError):
    """The database could not be reached: 503, the client may retry (nothing was stored)."""

    status_code = 503
    issue_code = "transient"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is unavailable; retry later", headers={"Retry-After": "5"})


class DatabaseError(RuntimeError):
    """The database cannot be used at start-up: the message names the configuration key."""


def is_postgres(spec: str) -> bool:
    return spec.startswith(POSTGRES_SCHEMES)


def safe_location(url: str) -> str:
    """host:port/database of a URL, never its password (for messages and logs)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


def open_pool(url: str, key: str, name: str) -> Any:
    """A pool of autocommit connections, opened (one connection made) now: DatabaseError naming `key` when
    the server cannot be reached."""
    import psycopg
    from psycopg_pool import ConnectionPool, PoolTimeout

    try:  # first alone: its error says why (refused, wrong password, no such database), the pool's would not
        psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT_S)).close()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(f"{key}: cannot connect to PostgreSQL at {safe_location(url)}: {reason}") from None
    pool = ConnectionPool(
        url,
        min_size=POOL_MIN,
        max_size=POOL_MAX,
        kwargs={"autocommit": True, "application_name": f"gm-facade {name}"},
        check=ConnectionPool.check_connection,  # a connection the server dropped (a restart) is replaced, not used
        timeout=POOL_WAIT_S,
        name=name,
        open=False,
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
    except PoolTimeout:
        pool.close()
        raise DatabaseError(
            f"{key}: cannot connect to PostgreSQL at {safe_location(url)} within {CONNECT_TIMEOUT_S:.0f} s "
            "(is the server up, and are the user and password right? see the server's log)"
        ) from None
    return pool


def migrations(package: str) -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of the package's `migrations/` folder, in order; numbered 1, 2, 3, ..."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{package}.migrations: numbered {numbers}, expected 1..{len(found)}")
    return found


def migrate(pool: Any, component: str, package: str, key: str) -> int:
    """Apply the component's missing migrations (one transaction, under the advisory lock); its version."""
    steps = migrations(package)
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (component text PRIMARY KEY, version integer NOT NULL, "
            "applied timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT version FROM schema_version WHERE component = %s", (component,)).fetchone()
        current = int(row[0]) if row else 0
        if current > len(steps):
            raise DatabaseError(
                f"{key}: the database's {component} schema is version {current}, newer than this facade's "
                f"({len(steps)}): run the facade version that upgraded it, or a later one"
            )
        for number, _name, sql in steps[current:]:
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_version (component, version) VALUES (%s, %s) "
                "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, applied = now()",
                (component, number),
            )
        return len(steps)
