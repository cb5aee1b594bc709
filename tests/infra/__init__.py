"""Real test archives (Orthanc, dcmqrscp) and an HTTP fault proxy, on loopback.

Shared helpers live here; see orthanc.py, dcmqrscp.py and faultproxy.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

INSTALL_HINT = "run scripts/install-system-deps.sh (as root) to install the test archives"


class InfraError(RuntimeError):
    """A test archive could not be started or used."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def require_binary(name: str) -> str:
    """Return the path of executable ``name`` or fail with the install hint."""
    path = shutil.which(name) or _sbin_lookup(name)
    if path is None:
        raise InfraError(f"executable {name!r} not found on PATH: {INSTALL_HINT}")
    return path


def _sbin_lookup(name: str) -> str | None:
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    return None


def log_tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def stop_process_group(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Stop a process started with start_new_session=True, and its children: SIGTERM to its group,
    SIGKILL when it has not ended within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """A WSGI app on a real threaded loopback HTTP server (werkzeug); yields ``http://127.0.0.1:PORT``."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
