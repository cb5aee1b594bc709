"""A real redis-server on loopback (no persistence, its own folder) for integration tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.infra import InfraError, free_port, log_tail, require_binary, stop_process_group


class RedisServer:
    """Starts ``redis-server`` on a free loopback port; ``url`` is ``redis://127.0.0.1:PORT/0``."""

    def __init__(self, *, startup_timeout: float = 20.0) -> None:
        self.startup_timeout = startup_timeout
        self.port = 0
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = require_binary("redis-server")
        self.workdir = Path(tempfile.mkdtemp(prefix="test-redis-"))
        self.port = free_port()
        self._log_file = (self.workdir / "redis.log").open("wb")
        self._proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import redis

        assert self._proc is not None and self.workdir is not None
        client = redis.Redis.from_url(self.url, socket_timeout=2)
        deadline = time.monotonic() + self.startup_timeout
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise InfraError(f"redis-server exited:\n{log_tail(self.workdir / 'redis.log')}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                time.sleep(0.1)
        finally:
            client.close()
        self.stop()
        raise InfraError(f"redis-server not answering within {self.startup_timeout} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc, timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
