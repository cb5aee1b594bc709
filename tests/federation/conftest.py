"""Fixtures: eight real Orthanc archives (one per demo trust, each loaded with that trust's demo
folder), each behind its own FaultProxy, and a facade app built over the proxies per test.

The archives live for the session (starting eight Orthancs and uploading ~1,250 files costs
seconds); the app is built per test (no folder indexing: ~0.1 s), so circuit breakers and caches
never leak from one test to the next. Every proxy's fault is reset and its request log cleared
before and after each test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from app import create_app
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, settings_from_document
from tests.federation.support import Federated, FhirClient, TrustServer
from tests.infra.faultproxy import FaultProxy
from tests.infra.orthanc import OrthancServer
from tools.demo.generate import TRUSTS

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
BASE_URL = "http://127.0.0.1:8080/fhir"
CURSOR_SECRET = "test-cursor-secret-0123456789abcdef"
ARCHIVE_TIMEOUT_S = 2.0
FEDERATION: dict[str, Any] = {
    "archive_timeout_s": ARCHIVE_TIMEOUT_S,
    "deadline_s": 5,
    "circuit_breaker": {"threshold": 2, "cooldown_s": 2},
    "cache_ttl_s": 0,
}


def _upload(server: OrthancServer, paths: list[Path]) -> int:
    with requests.Session() as session:
        for path in paths:
            reply = session.post(
                f"{server.url}/instances",
                data=path.read_bytes(),
                headers={"Content-Type": "application/dicom"},
                timeout=60,
            )
            assert reply.status_code == 200, f"upload of {path}: HTTP {reply.status_code} {reply.text[:200]}"
    return len(paths)


@pytest.fixture(scope="session")
def trust_servers(demo_data: Path) -> Iterator[dict[str, TrustServer]]:
    """Eight Orthancs (started and loaded in parallel), each behind a FaultProxy."""
    names = {t.id: t.name for t in TRUSTS}
    started: dict[str, OrthancServer] = {}
    proxies: dict[str, FaultProxy] = {}

    def start(trust_id: str) -> None:
        server = OrthancServer(aet=trust_id.upper()[:16])
        server.start()
        started[trust_id] = server

    try:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(start, names))
            jobs = []
            for trust_id, server in started.items():
                files = sorted((demo_data / trust_id).rglob("*.dcm"))
                jobs += [pool.submit(_upload, server, files[i::2]) for i in range(2)]
            uploaded = sum(job.result() for job in jobs)
        assert uploaded == len(list(demo_data.rglob("*.dcm")))
        for trust_id, server in started.items():
            proxies[trust_id] = FaultProxy(server.dicomweb_url).start()
        yield {t: TrustServer(t, names[t], started[t], proxies[t]) for t in names}
    finally:
        for proxy in proxies.values():
            proxy.stop()
        with ThreadPoolExecutor(max(len(started), 1)) as pool:
            list(pool.map(lambda s: s.stop(graceful=False), started.values()))


@pytest.fixture(autouse=True)
def reset_faults(trust_servers: dict[str, TrustServer]) -> Iterator[None]:
    for server in trust_servers.values():
        server.reset()
    yield
    for server in trust_servers.values():
        server.reset()


@pytest.fixture(scope="session")
def federation_document(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """config/demo.yaml with folders replaced by DICOMweb archives (urls filled in per build)."""
    doc = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    state = tmp_path_factory.mktemp("federation-state")
    doc["audit"] = {"path": str(state / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(state / "signing-keys.json")
    doc["auth"]["store"] = f"sqlite:{state / 'auth-state.sqlite'}"
    doc["patient_xref"] = str(demo_data / "xref.csv")
    doc["cursor_secret"] = CURSOR_SECRET
    doc["base_url"] = BASE_URL
    doc["federation"] = copy.deepcopy(FEDERATION)
    return doc


BuildFacade = Callable[..., Federated]


@pytest.fixture()
def build_facade(
    trust_servers: dict[str, TrustServer], federation_document: dict[str, Any], demo_data: Path
) -> Iterator[BuildFacade]:
    """build_facade(archives={trust: {key: value}}, federation={...}, patient_xref=path) -> a fresh Federated app.

    `archives` overrides keys of a trust's `{type: dicomweb, url: <proxy>/dicom-web, timeout_s: 2}`;
    `federation` replaces the whole federation block; `patient_xref` another cross-reference CSV.
    """
    built: list[Federated] = []

    def build(
        archives: dict[str, dict[str, Any]] | None = None,
        federation: dict[str, Any] | None = None,
        patient_xref: Path | None = None,
    ) -> Federated:
        doc = copy.deepcopy(federation_document)
        if patient_xref is not None:
            doc["patient_xref"] = str(patient_xref)
        for trust in doc["trusts"]:
            trust["archive"] = {
                "type": "dicomweb",
                "url": trust_servers[trust["id"]].url,
                "timeout_s": ARCHIVE_TIMEOUT_S,
                **(archives or {}).get(trust["id"], {}),
            }
        if federation is not None:
            doc["federation"] = federation
        with pytest.MonkeyPatch.context() as env:
            env.delenv(BASE_URL_ENV, raising=False)
            env.delenv(CURSOR_SECRET_ENV, raising=False)
            settings = settings_from_document(doc, demo_data, "tests/federation")
        app = create_app(settings)
        found = Federated(app, FhirClient(app), trust_servers, {t.id: t.name for t in TRUSTS})
        built.append(found)
        return found

    yield build
    for found in built:
        federation = found.services.federation
        # Let late archive calls (a hang cut by the deadline) finish before the next test counts requests.
        for trust in federation.trusts:
            trust.pool.shutdown(wait=True)
        federation.close()


@pytest.fixture()
def federated(build_facade: BuildFacade) -> Federated:
    """The facade over the eight proxies with the default federation settings."""
    return build_facade()
