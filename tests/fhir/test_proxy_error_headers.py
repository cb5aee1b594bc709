"""S19 residual (docs/security.md, "Behind a reverse proxy"): gunicorn's own error pages (a request it refuses
before the application is called) carry none of the security headers, and no gunicorn setting adds them; the
nginx configuration documented in docs/security.md adds them to every answer that is not the application's,
nginx's own error pages included, and leaves the application's answers as they are.

Real processes on loopback: `python -m app serve` (gunicorn) and nginx configured with the two blocks read
from docs/security.md as written there. Requests are written on raw sockets (a client library would refuse
to send a malformed request line).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.infra import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECURITY_MD = ROOT / "docs" / "security.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
START_TIMEOUT_S = 120
ADDED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "cache-control": "no-store",
    "pragma": "no-cache",
}
MALFORMED_LINE = b"GET /fhir/metadata HTTP/1.1 extra\r\nHost: x\r\n\r\n"
LONG_LINE = b"GET /fhir/metadata?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
# 101 short header fields: over gunicorn's limit_request_fields (100), well within nginx's buffers, so nginx
# passes the request on and gunicorn answers its own 431 page.
MANY_HEADERS = (
    b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    + b"".join(b"X-H%d: v\r\n" % n for n in range(101))
    + b"\r\n"
)


def documented_block(name: str) -> str:
    """The ```nginx block of docs/security.md whose first line is `# facade-security-headers: <name>`."""
    text = SECURITY_MD.read_text(encoding="utf-8")
    blocks = re.findall(r"```nginx\n(.*?)```", text, flags=re.S)
    [block] = [b for b in blocks if b.startswith(f"# facade-security-headers: {name}\n")]
    return block


def raw(port: int, request: bytes) -> tuple[int, dict[str, list[str]]]:
    """(status, headers by lower-case name) of the answer to bytes written as they are."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(head[0].split()[1]), headers


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def gunicorn_port(config_document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("serve")
    config = folder / "facade.yaml"
    config.write_text(yaml.safe_dump(config_document), encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACADE_")}
    env["FACADE_BASE_URL"] = f"http://127.0.0.1:{port}/fhir"
    command = [sys.executable, "-m", "app", "serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    with (folder / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (folder / "serve.log").read_text(errors="replace")[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        yield port
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def nginx_port(gunicorn_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "logs").mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{documented_block("http")}
    server {{
        listen 127.0.0.1:{port};
{documented_block("server")}
        location / {{
            proxy_pass http://127.0.0.1:{gunicorn_port};
        }}
    }}
}}
""",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [NGINX, "-e", str(prefix / "logs" / "stderr.log"), "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (prefix / "logs" / "error.log").read_text(errors="replace")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        yield port
    finally:
        _stop(process)


def test_gunicorns_own_error_page_has_no_security_headers(gunicorn_port: int) -> None:
    """The gap, as it stands without a proxy: gunicorn's 431 page, with none of the headers."""
    status, headers = raw(gunicorn_port, MANY_HEADERS)
    assert status == 431
    assert not set(ADDED) & set(headers), headers


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [(MALFORMED_LINE, 400), (LONG_LINE, 414), (MANY_HEADERS, 431)],
    ids=["malformed-line-nginx", "long-line-nginx", "too-many-headers-gunicorn"],
)
def test_the_documented_nginx_blocks_add_the_headers_to_error_pages(
    nginx_port: int, request_bytes: bytes, status: int
) -> None:
    found, headers = raw(nginx_port, request_bytes)
    assert found == status
    assert {name: headers.get(name) for name in ADDED} == {name: [value] for name, value in ADDED.items()}


def test_the_documented_nginx_blocks_leave_the_applications_answers_alone(nginx_port: int) -> None:
    """The public CapabilityStatement keeps its own caching; no header is doubled."""
    direct = requests.get(f"http://127.0.0.1:{nginx_port}/fhir/metadata", timeout=10)
    assert direct.status_code == 200
    _status, headers = raw(nginx_port, b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert headers["x-content-type-options"] == ["nosniff"]
    assert "no-store" not in " ".join(headers.get("cache-control", []))
    assert "pragma" not in headers
