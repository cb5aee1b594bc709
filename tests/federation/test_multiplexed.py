"""A federated search asks its QIDO-RS archives from its own thread (app.archives.exchange.Multiplexer):
no archive thread is started, every archive is asked twice (studies and series together), the answer is
the same as the archives hold, and a dead archive is named while the others answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from flask import Flask

from app import create_app
from app.settings import settings_from_document
from app.web.components import components
from bench.facade_cpu import CannedArchives
from bench.federation import trust_doc
from tests.infra import free_port

pytestmark = pytest.mark.integration
NHS = "https://fhir.nhs.uk/Id/nhs-number"


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedArchives]:
    archives = CannedArchives(8, 13, 0.02, 0.0)
    yield archives
    archives.stop()


def _app(urls: list[str], tmp_path: Path) -> Flask:
    doc: dict[str, Any] = {
        "demo": True,
        "base_url": "http://127.0.0.1/fhir",
        "search": {"default_count": 50, "max_count": 200},
        "federation": {"archive_timeout_s": 2, "deadline_s": 5, "cache_ttl_s": 0},
        "trusts": [trust_doc(i, u) for i, u in enumerate(urls)],
        "audit": {"path": str(tmp_path / "audit.sqlite")},
        "auth": {"mode": "none", "insecure_no_auth": True},
    }
    return create_app(settings_from_document(doc, tmp_path, "tests/federation/multiplexed"))


def _counts(canned: CannedArchives) -> list[tuple[int, int]]:
    """(studies, series) requests each archive has answered since its counters were reset."""
    found = [requests.get(u.split("/dicom-web")[0] + "/_count", timeout=5).json() for u in canned.urls]
    return [(c["studies"], c["series"]) for c in found]


def test_a_search_asks_every_archive_from_its_own_thread(canned: CannedArchives, tmp_path: Path) -> None:
    app = _app(canned.urls, tmp_path)
    try:
        for url in canned.urls:
            requests.post(url.split("/dicom-web")[0] + "/_reset", timeout=5)
        before = {t.name for t in threading.enumerate()}
        response = app.test_client().get(f"/fhir/ImagingStudy?patient.identifier={NHS}|{canned.patient}&_count=200")
        assert response.status_code == 200
        bundle = orjson.loads(response.data)
        studies = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "ImagingStudy"]
        assert len(studies) == 8 * 13 and not [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
        assert sum(len(s["resource"].get("series", ())) for s in studies) > 104
        started = {t.name for t in threading.enumerate()} - before
        assert not [n for n in started if n.startswith("archive-")], started
        assert _counts(canned) == [(1, 1)] * 8  # P7: two requests per archive
    finally:
        components(app).services.close()


def test_a_refused_archive_is_named_and_the_others_answer(canned: CannedArchives, tmp_path: Path) -> None:
    urls = [*canned.urls[:7], f"http://127.0.0.1:{free_port()}/dicom-web"]
    app = _app(urls, tmp_path)
    try:
        response = app.test_client().get(f"/fhir/ImagingStudy?patient.identifier={NHS}|{canned.patient}&_count=200")
        assert response.status_code == 200
        bundle = orjson.loads(response.data)
        studies = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "ImagingStudy"]
        assert len(studies) == 7 * 13
        issues = [i for e in bundle["entry"] if e["search"]["mode"] == "outcome" for i in e["resource"]["issue"]]
        assert len(issues) == 1 and issues[0]["code"] == "incomplete"
        assert "did not answer: connection refused or reset" in issues[0]["diagnostics"]
    finally:
        components(app).services.close()
