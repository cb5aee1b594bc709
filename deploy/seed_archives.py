"""Seed trust archives (Orthanc) with the demo dataset: the one-shot loader of deploy/compose.yaml, and
what tests/deploy/ runs against its own Orthanc archives.

    python deploy/seed_archives.py SEED_DIR bolton=http://orthanc-bolton:8042 christie=http://...

Generates the demo dataset (tools/demo) into SEED_DIR/demo-data unless it is there, writes its patient
cross-reference for the named trusts to SEED_DIR/xref.csv (the facade's patient_xref), and POSTs each
named trust's DICOM files to that archive's /instances. Uploading again is harmless (Orthanc answers
AlreadyStored). An archive that requires a password gets HTTP basic auth as user `facade` with the
password in the environment variable <TRUST>_ARCHIVE_PASSWORD (e.g. CHRISTIE_ARCHIVE_PASSWORD), the one
the facade's configuration names. Exit 0 when every file is stored; 1 with one line per problem otherwise.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE_USER = "facade"
READY_TIMEOUT_S = 120


def password_env(trust: str) -> str:
    return f"{trust.upper().replace('-', '_')}_ARCHIVE_PASSWORD"


def _session(trust: str) -> requests.Session:
    session = requests.Session()
    password = os.environ.get(password_env(trust))
    if password:
        session.auth = (ARCHIVE_USER, password)
    return session


def _wait_ready(session: requests.Session, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if session.get(f"{url}/system", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}/system did not answer 200 within {READY_TIMEOUT_S} s")
        time.sleep(1)


def _write_xref(source: Path, target: Path, trusts: set[str]) -> None:
    """The dataset's cross-reference, only its rows for the seeded trusts (the facade refuses a row
    naming a trust it does not have)."""
    with source.open(newline="", encoding="utf-8") as read:
        rows = list(csv.reader(read))
    kept = [rows[0]] + [row for row in rows[1:] if row[rows[0].index("trust")] in trusts]
    with target.open("w", newline="", encoding="utf-8") as write:
        csv.writer(write, lineterminator="\n").writerows(kept)


def seed(seed_dir: Path, archives: dict[str, str]) -> dict[str, int]:
    """Files stored per trust."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.demo.generate import ensure_demo_data

    data = seed_dir / "demo-data"
    ensure_demo_data(data)
    _write_xref(data / "xref.csv", seed_dir / "xref.csv", set(archives))
    stored: dict[str, int] = {}
    for trust, url in archives.items():
        folder = data / trust
        if not folder.is_dir():
            raise RuntimeError(f"{trust}: the demo dataset has no trust of that name")
        session = _session(trust)
        _wait_ready(session, url.rstrip("/"))
        count = 0
        for path in sorted(folder.rglob("*.dcm")):
            reply = session.post(
                f"{url.rstrip('/')}/instances",
                data=path.read_bytes(),
                headers={"Content-Type": "application/dicom"},
                timeout=60,
            )
            if reply.status_code != 200:
                raise RuntimeError(f"{trust}: {path.name}: HTTP {reply.status_code} {reply.text[:200]}")
            count += 1
        stored[trust] = count
    return stored


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    archives = dict(a.split("=", 1) for a in argv[1:])
    try:
        stored = seed(Path(argv[0]), archives)
    except (RuntimeError, OSError, requests.RequestException) as error:
        print(f"seed_archives: {error}", file=sys.stderr)
        return 1
    print("seed_archives: " + ", ".join(f"{trust} {count} files" for trust, count in stored.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
