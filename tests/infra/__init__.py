"""Real test archives (Orthanc, dcmqrscp) and an HTTP fault proxy, on loopback.

Shared helpers live here; see orthanc.py, dcmqrscp.py and faultproxy.py.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

INSTALL_HINT = (
    "run scripts/install-system-deps.sh (as root) to install the test archives"
)


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
