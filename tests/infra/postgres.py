"""A real PostgreSQL server on loopback for tests (the Debian package `postgresql`; no system service).

Usage::

    with PostgresServer() as pg:
        pg.url                       # postgresql://facade:<password>@127.0.0.1:<port>/facade
        other = pg.create_database("case1")   # the URL of a new, empty database on the same server
        with pg.connect() as conn:   # a psycopg connection (autocommit) to `facade`, for assertions
            conn.execute("SELECT 1")

``start()`` runs ``initdb`` into a temporary folder and ``postgres`` from it, listening on 127.0.0.1 at a
free port (its unix socket in that folder too); ``stop()`` shuts it down (fast shutdown: open sessions
are ended) and removes the folder. Nothing of the system's PostgreSQL (its clusters, its service, port
5432) is touched. The binaries are taken from ``/usr/lib/postgresql/<highest version>/bin``.

PostgreSQL refuses to run as root, and the tests run as root: then ``initdb`` and ``postgres`` run as the
unprivileged user ``postgres`` (created by the Debian package; ``nobody`` when it is missing), which owns
the temporary folder. Under another user they simply run as that user.

The bootstrap superuser is ``facade`` with a random password (``password``), required for TCP connections
(scram-sha-256); ``url_without_password`` is the same URL without it, for libpq's ``PGPASSWORD``.
Durability settings are relaxed for speed (``fsync=off``): commits are still commits (visible to every
other connection once acknowledged), they just do not survive a crash of the machine.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tests.infra import INSTALL_HINT, InfraError, free_port, log_tail, stop_process_group

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "facade"
DATABASE = "facade"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_bin_dir() -> Path:
    """The bin folder of the highest installed PostgreSQL major version (it holds initdb and postgres)."""
    found = [
        Path(p) for p in glob.glob(BIN_GLOB) if (Path(p) / "initdb").is_file() and (Path(p) / "postgres").is_file()
    ]
    if not found:
        raise InfraError(f"PostgreSQL server binaries not found under {BIN_GLOB}: {INSTALL_HINT}")

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    return max(found, key=version)


def _run_as() -> str | None:
    """The user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise InfraError("running as root and neither user 'postgres' nor 'nobody' exists to run PostgreSQL")


def _traversable_tempdir() -> str:
    """A parent folder every user can enter (TMPDIR may be a private folder of root's)."""
    base = Path(tempfile.gettempdir()).resolve()
    for folder in (base, *base.parents):
        if not folder.stat().st_mode & 0o001:
            return "/tmp"
    return str(base)


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1: ``start()``, ``url``, ``create_database()``, ``stop()``."""

    def __init__(self, *, startup_timeout: float = 60.0, max_connections: int = 200) -> None:
        self.startup_timeout = startup_timeout
        self.max_connections = max_connections
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.password = secrets.token_urlsafe(18)
        self.database = DATABASE
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._databases = 0

    # -- URLs -------------------------------------------------------------------------------------------
    def url_of(self, database: str, *, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{self.user}{secret}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """``postgresql://facade:<password>@127.0.0.1:<port>/facade``."""
        return self.url_of(self.database)

    @property
    def url_without_password(self) -> str:
        return self.url_of(self.database, password=False)

    # -- life cycle -------------------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        bin_dir = find_bin_dir()
        user = _run_as()
        self.workdir = Path(tempfile.mkdtemp(prefix="test-postgres-", dir=_traversable_tempdir()))
        data = self.workdir / "data"
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (self.workdir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(self.workdir, 0o700)
        as_user: dict[str, Any] = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}
        initdb = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
            **as_user,
        )
        pwfile.unlink()
        if initdb.returncode != 0:
            output = initdb.stdout.decode(errors="replace")[-3000:]
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise InfraError(f"initdb failed ({initdb.returncode}):\n{output}")
        self.port = free_port()
        self._log_file = (self.workdir / "postgres.log").open("wb")
        self._proc = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"port={self.port}",
                "-c",
                f"unix_socket_directories={self.workdir}",
                "-c",
                f"max_connections={self.max_connections}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "log_min_messages=warning",
            ],
            cwd=self.workdir,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_user,
        )
        self._wait_ready()
        self._execute(f"CREATE DATABASE {self.database}", database="postgres")
        return self

    def _wait_ready(self) -> None:
        import psycopg

        assert self._proc is not None and self.workdir is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = log_tail(self.workdir / "postgres.log")
                self.stop()
                raise InfraError(f"postgres exited:\n{log}")
            try:
                psycopg.connect(self.url_of("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.stop()
        raise InfraError(f"postgres not answering within {self.startup_timeout} s")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions ended, a clean checkpoint), SIGKILL after 30 s; the folder is removed."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGINT)
                proc.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                stop_process_group(proc, timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- helpers ----------------------------------------------------------------------------------------
    def connect(self, database: str | None = None) -> Any:
        """A psycopg connection (autocommit) to `database` (default: ``facade``); the caller closes it."""
        import psycopg

        return psycopg.connect(self.url_of(database or self.database), autocommit=True, connect_timeout=10)

    def _execute(self, sql: str, database: str = DATABASE) -> None:
        with self.connect(database) as conn:
            conn.execute(sql)

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database (named `name`, or numbered) on this server; returns its URL."""
        self._databases += 1
        name = name or f"test_{self._databases}"
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self._execute(f"CREATE DATABASE {name}", database="postgres")
        return self.url_of(name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
