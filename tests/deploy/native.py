"""The compose topology without containers: nginx, two gunicorn facade instances, PostgreSQL, Redis and
three Orthanc archives, all on loopback, each on free ports, started and stopped here.

The facade and nginx configurations are deploy/facade.template.yaml and deploy/nginx.template.conf, the
templates of deploy/compose.yaml, rendered with loopback hosts and these ports. Each facade instance is
what the image's CMD runs: gunicorn (master and gthread workers, app.ops.gunicorn_conf, wsgi:app), in a
process group of its own so that it can be killed whole (SIGKILL of master and workers).

nginx runs from a temporary folder (`-p`, `-c`, `-e`: configuration, pid, logs and temp files there);
it never reads /etc/nginx nor touches the system's service. As root its master runs as root and its
workers as `nobody`, for which the temp folders are made writable.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import requests

from tests.demo_dataset import demo_dataset
from tests.deploy.support import DEPLOY, ROOT, render
from tests.infra import InfraError, free_port, log_tail, require_binary, stop_process_group
from tests.infra.orthanc import OrthancServer
from tests.infra.postgres import PostgresServer
from tests.infra.redis_server import RedisServer

TRUSTS = ("bolton", "christie", "mft")
PROTECTED_TRUST = "christie"  # its archive asks for HTTP basic auth, as in compose.yaml
ARCHIVE_USER = "facade"
CURSOR_SECRET = "native-deploy-cursor-secret-0123456789"
START_TIMEOUT_S = 120
NGINX_TEMP = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InfraError(f"exited with {process.returncode}:\n{log_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise InfraError(f"port {port} not open within {timeout} s:\n{log_tail(log)}")


@dataclass
class FacadeInstance:
    """One facade instance: gunicorn as the image runs it, in its own process group."""

    name: str
    port: int
    workdir: Path
    env: dict[str, str] = field(repr=False)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> FacadeInstance:
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Start gunicorn without waiting for it (wait_ready)."""
        metrics = self.workdir / f"{self.name}-metrics"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir()
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "-c", "python:app.ops.gunicorn_conf", "--no-control-socket",
                "--worker-class", "gthread", "--bind", f"127.0.0.1:{self.port}",
                "--workers", "2", "--threads", "4", "--timeout", "60", "wsgi:app",
            ],
            cwd=ROOT,
            env={**self.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.starts += 1

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise InfraError(f"{self.name} exited with {self.process.returncode}:\n{log_tail(self.log_path)}")
            try:
                if requests.get(self.url("/readyz"), timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise InfraError(f"{self.name}: /readyz not 200 within {START_TIMEOUT_S} s:\n{log_tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL to the whole process group: the gunicorn master and its workers, at once."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process, timeout=20)
        if self._log is not None:
            self._log.close()
            self._log = None


class ProtectedOrthanc(OrthancServer):
    """An Orthanc that asks for HTTP basic auth (the Christie's in compose.yaml); its own probes use it."""

    def __init__(self, aet: str, user: str, password: str) -> None:
        super().__init__(aet=aet, extra_config={"AuthenticationEnabled": True, "RegisteredUsers": {user: password}})
        self._session.auth = (user, password)


class Nginx:
    """nginx from a folder of its own: the rendered template included in a minimal nginx.conf."""

    def __init__(self, workdir: Path, port: int, site: str) -> None:
        self.workdir = workdir
        self.port = port
        self.site = site
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        binary = require_binary("nginx")
        self.workdir.mkdir(parents=True, exist_ok=True)
        worker_user = ""
        if os.geteuid() == 0:  # workers as nobody: they must reach their temp folders (and nothing else)
            group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
            worker_user = f"user nobody {group};"
            for folder in (self.workdir.parent, self.workdir):
                os.chmod(folder, 0o711)
        for name in NGINX_TEMP:
            folder = self.workdir / name
            folder.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                os.chown(folder, pwd.getpwnam("nobody").pw_uid, -1)
        (self.workdir / "facade.conf").write_text(self.site)
        temp = "\n".join(f"    {name}_temp_path {self.workdir / name};" for name in NGINX_TEMP)
        (self.workdir / "nginx.conf").write_text(
            f"""{worker_user}
worker_processes 1;
daemon off;
pid {self.workdir / "nginx.pid"};
error_log {self.workdir / "error.log"} warn;
events {{ worker_connections 512; }}
http {{
    # Which instance answered each request, and the attempts before it (a retry: "B, A").
    log_format upstreams '$request_id $status "$upstream_addr" "$upstream_status" $request_method $uri';
    access_log {self.workdir / "access.log"} upstreams;
{temp}
    include {self.workdir / "facade.conf"};
}}
"""
        )
        self.log = (self.workdir / "stderr.log").open("wb")
        test = subprocess.run(
            [binary, "-t", "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf"), "-e", str(self.workdir / "error.log")],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        if test.returncode != 0:
            raise InfraError(f"nginx -t refused the configuration:\n{test.stderr}")
        self.process = subprocess.Popen(
            [binary, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf"), "-e", str(self.workdir / "error.log")],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        _wait_port(self.port, self.process, self.workdir / "error.log", 30)
        return self

    def access_lines(self) -> list[str]:
        """The access log's lines so far (the log format above: $uri last)."""
        return (self.workdir / "access.log").read_text().splitlines()

    def upstreams(self, uri: str) -> list[tuple[str, list[str], list[str]]]:
        """(status, upstream addresses tried, their statuses) of each logged request for `uri`."""
        found = []
        for line in (self.workdir / "access.log").read_text().splitlines():
            parts = line.split(" ")
            if parts[-1] == uri:
                addresses = line.split('"')[1]
                statuses = line.split('"')[3]
                found.append((parts[1], addresses.split(", "), statuses.split(", ")))
        return found

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process, timeout=20)
            self.process = None
            self.log.close()


class NativeStack:
    """Everything of deploy/compose.yaml on loopback. ``values`` are the template values used."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="deploy-native-"))
        self.archive_password = "christie-native-" + os.urandom(6).hex()
        self.redis = RedisServer()
        self.postgres = PostgresServer()
        self.orthancs: dict[str, OrthancServer] = {}
        self.instances: list[FacadeInstance] = []
        self.nginx: Nginx | None = None
        self.values: dict[str, str] = {}
        self.config_path = self.workdir / "facade.yaml"

    @property
    def public(self) -> str:
        assert self.nginx is not None
        return self.nginx.origin

    @property
    def base_url(self) -> str:
        return f"{self.public}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.public}/auth/token"

    def start(self) -> NativeStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.redis.start()
        self.postgres.start()
        for trust in TRUSTS:
            if trust == PROTECTED_TRUST:
                self.orthancs[trust] = ProtectedOrthanc(trust.upper(), ARCHIVE_USER, self.archive_password).start()
            else:
                self.orthancs[trust] = OrthancServer(aet=trust.upper()).start()
        seed_dir = self.workdir / "seed"
        seed_dir.mkdir()
        shutil.copytree(demo_dataset(), seed_dir / "demo-data")  # the loader generates it when missing
        state_dir = self.workdir / "state"
        state_dir.mkdir()
        env_archive = {f"{PROTECTED_TRUST.upper()}_ARCHIVE_PASSWORD": self.archive_password}
        seeded = subprocess.run(
            [sys.executable, str(DEPLOY / "seed_archives.py"), str(seed_dir)]
            + [f"{trust}={server.url}" for trust, server in self.orthancs.items()],
            env={**os.environ, **env_archive}, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if seeded.returncode != 0:
            raise InfraError(f"deploy/seed_archives.py failed:\n{seeded.stdout}\n{seeded.stderr}")
        self.seed_output = seeded.stdout.strip()
        nginx_port, a_port, b_port = free_port(), free_port(), free_port()
        while len({nginx_port, a_port, b_port}) < 3:
            a_port, b_port = free_port(), free_port()
        self.values = {
            "PUBLIC_HOST": "127.0.0.1",
            "PUBLIC_PORT": str(nginx_port),
            "LISTEN_PORT": str(nginx_port),
            "FACADE_A_HOST": "127.0.0.1",
            "FACADE_A_PORT": str(a_port),
            "FACADE_B_HOST": "127.0.0.1",
            "FACADE_B_PORT": str(b_port),
            "POSTGRES_HOST": self.postgres.host,
            "POSTGRES_PORT": str(self.postgres.port),
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.redis.port),
        }
        for trust, server in self.orthancs.items():
            self.values[f"{trust.upper()}_HOST"] = server.host
            self.values[f"{trust.upper()}_PORT"] = str(server.http_port)
        self.config_path.write_text(render.render(render.FACADE_TEMPLATE, self.values))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FACADE_", "PROMETHEUS_"))},
            "FACADE_CONFIG": str(self.config_path),
            "FACADE_STATE_DIR": str(state_dir),
            "FACADE_SEED_DIR": str(seed_dir),
            "FACADE_CURSOR_SECRET": CURSOR_SECRET,
            "PGPASSWORD": self.postgres.password,
            **env_archive,
        }
        a = FacadeInstance("facade-a", a_port, self.workdir, env)
        b = FacadeInstance("facade-b", b_port, self.workdir, env)
        self.instances = [a, b]
        # Both at once, as compose starts its replicas: one creates the shared signing key file and the
        # schema (advisory lock), the other waits for or finds them.
        a.launch()
        b.launch()
        a.wait_ready()
        b.wait_ready()
        self.nginx = Nginx(self.workdir / "nginx", nginx_port, render.render(render.NGINX_TEMPLATE, self.values))
        self.nginx.start()

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for instance in self.instances:
            instance.stop()
        for server in self.orthancs.values():
            server.stop(graceful=False)
        self.postgres.stop()
        self.redis.stop()
        if not os.environ.get("KEEP_TEST_ARCHIVES"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NativeStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
