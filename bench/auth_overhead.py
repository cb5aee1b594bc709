"""P6: latency with SMART token validation vs without (cached JWKS), target <= 1.05x.

Two real gunicorn facades over the same embedded demo archives, side by side: one with the
embedded SMART server (every request's JWT verified: signature, claims, revocation store, scopes,
compartment decision, audit), one with `auth.mode: none`. The same patient search is sent to
both, interleaved, one request at a time from one requests.Session. Also reported: the CPU cost
of validating one token in-process.

Run: python -m bench.auth_overhead
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from app.settings import settings_from_document
from app.web.components import components
from bench.results import write_section
from tests.infra import free_port
from tools.demo.generate import ensure_demo_data

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
ROUNDS = 300
TARGET = 1.05


def config(data: Path, work: Path, label: str, secured: bool, port: int) -> Path:
    doc = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    doc["base_url"] = f"http://127.0.0.1:{port}/fhir"
    doc["patient_xref"] = str(data / "xref.csv")
    for trust in doc["trusts"]:
        trust["archive"]["path"] = str(data / trust["id"])
    doc["audit"] = {"path": str(work / f"audit-{label}.sqlite")}
    if secured:
        doc["auth"]["signing_keys"] = str(work / f"keys-{label}.json")
        doc["auth"]["store"] = f"sqlite:{work / f'auth-{label}.sqlite'}"
    else:
        doc["auth"] = {"mode": "none", "insecure_no_auth": True}
    settings_from_document(doc, work)  # fail here, not in the server, on a bad document
    path = work / f"facade-{label}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def start(path: Path, port: int, work: Path, label: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACADE_")}
    env.update(FACADE_CONFIG=str(path), FACADE_CURSOR_SECRET="bench-auth-0123456789abcdef")
    log = (work / f"{label}.log").open("wb")
    process = subprocess.Popen(
        [
            str(GUNICORN),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            time.sleep(0.3)
    raise RuntimeError(f"{label} did not start: {(work / f'{label}.log').read_text()[-2000:]}")


def token(base: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "token",
            "--base",
            base,
            "--client",
            "portal",
            "--key",
            str(ROOT / "config" / "demo-keys" / "portal.private.jwk.json"),
            "--scope",
            "system/ImagingStudy.rs",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def in_process_validation_us(secured_config: Path) -> float:
    """CPU per token validation in the resource server (signature + claims + revocation lookup)."""
    from app import create_app

    app = create_app(secured_config)
    server = components(app).auth_server
    assert server is not None, "the secured configuration has an embedded SMART server"
    jwt = server.issuer("client_credentials", server.clients["portal"], None, "system/ImagingStudy.rs")
    protector = components(app).protector
    header = f"Bearer {jwt['access_token']}"
    protector.authenticate(header)
    start_cpu = time.process_time()
    for _ in range(2000):
        protector.authenticate(header)
    return (time.process_time() - start_cpu) / 2000 * 1e6


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    data = work / "demo-data"
    ensure_demo_data(data)
    nhs = json.loads((data / "manifest.json").read_text())["facts"]["multi_trust_patient"]["nhs_number"]
    ports = {"secured": free_port(), "open": free_port()}
    paths = {label: config(data, work, label, label == "secured", port) for label, port in ports.items()}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for label, port in ports.items():
            processes.append(start(paths[label], port, work, label))
        bases = {label: f"http://127.0.0.1:{port}/fhir" for label, port in ports.items()}
        headers: dict[str, dict[str, str]] = {
            "secured": {"Authorization": f"Bearer {token(bases['secured'])}"},
            "open": {},
        }
        session = requests.Session()
        times: dict[str, list[float]] = {"secured": [], "open": []}
        errors = 0
        for label in ("secured", "open"):  # warm both
            for _ in range(10):
                session.get(f"{bases[label]}/ImagingStudy?patient={nhs}", headers=headers[label], timeout=30)
        for i in range(ROUNDS):
            order = ("secured", "open") if i % 2 == 0 else ("open", "secured")
            for label in order:
                began = time.perf_counter()
                reply = session.get(f"{bases[label]}/ImagingStudy?patient={nhs}", headers=headers[label], timeout=30)
                times[label].append(time.perf_counter() - began)
                errors += reply.status_code != 200
        validation_us = in_process_validation_us(paths["secured"])
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
    stats: dict[str, Any] = {
        label: (statistics.median(v) * 1e3, percentile(v, 0.95) * 1e3) for label, v in times.items()
    }
    ratio50 = stats["secured"][0] / stats["open"][0]
    ratio95 = stats["secured"][1] / stats["open"][1]
    table = (
        "Two gunicorn facades (1 worker x 4 threads) over the eight embedded demo archives, the same patient search "
        f"({ROUNDS} interleaved rounds, one requests.Session): with the embedded SMART server vs `auth.mode: none`.\n\n"
        "| measure | value | target | met? |\n|---|---|---|---|\n"
        f"| with token validation p50 / p95 | {stats['secured'][0]:.1f} ms / {stats['secured'][1]:.1f} ms | | |\n"
        f"| without p50 / p95 | {stats['open'][0]:.1f} ms / {stats['open'][1]:.1f} ms | | |\n"
        f"| **P6 ratio p50 / p95** | **{ratio50:.3f}x / {ratio95:.3f}x** | <= {TARGET}x | "
        f"{'yes' if max(ratio50, ratio95) <= TARGET else '**NO**'} |\n"
        f"| token validation CPU in-process (RS384 signature, claims, revocation) | {validation_us:.0f} us | | |\n"
        f"| errors | {errors} | 0 | {'yes' if errors == 0 else '**NO**'} |\n"
    )
    print(write_section("P6 token validation overhead", table))


if __name__ == "__main__":
    main()
