"""Fixtures for the operations tests: small facades (two trusts) built per test with an `ops` section,
and one real Orthanc holding Bolton's demo studies behind a FaultProxy, for a DICOMweb trust.

Apps are built per test so that circuits, caches, probe results and rate-limit buckets never leak
from one test to the next. Metric values are global to the process: tests compare before and after.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from app import create_app
from app.ops import ops
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, settings_from_document
from app.web.components import components
from tests.infra.faultproxy import FaultProxy
from tests.infra.orthanc import OrthancServer
from tests.ops.support import TRUSTS, BuildApp


@pytest.fixture(scope="session")
def bolton_patient(manifest: dict[str, Any]) -> dict[str, Any]:
    """A patient with studies at Bolton (and a family name to look for in logs)."""
    return next(
        p
        for p in manifest["patients"]
        if sum("bolton" in s["trusts"] for s in p["studies"]) >= 2 and p["name"].isascii()
    )


@pytest.fixture(scope="session")
def bolton_archive(demo_data: Path) -> Iterator[FaultProxy]:
    """A real Orthanc with Bolton's demo files, behind a FaultProxy (its `url` is the DICOMweb base)."""
    with OrthancServer(aet="BOLTON") as orthanc:
        with requests.Session() as session:
            for path in sorted((demo_data / "bolton").rglob("*.dcm")):
                reply = session.post(
                    f"{orthanc.url}/instances",
                    data=path.read_bytes(),
                    headers={"Content-Type": "application/dicom"},
                    timeout=60,
                )
                assert reply.status_code == 200, reply.text[:200]
        with FaultProxy(orthanc.dicomweb_url) as proxy:
            yield proxy


@pytest.fixture
def proxy(bolton_archive: FaultProxy) -> Iterator[FaultProxy]:
    bolton_archive.set_fault("none")
    bolton_archive.clear()
    yield bolton_archive
    bolton_archive.set_fault("none")
    bolton_archive.clear()


@pytest.fixture(scope="session")
def small_folders(
    demo_data: Path, manifest: dict[str, Any], bolton_patient: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Folder archives small enough to index in no time: Bolton with the patient's studies, MFT with two."""
    root = tmp_path_factory.mktemp("small-folders")
    wanted = {
        "bolton": [s["study_uid"] for s in bolton_patient["studies"] if "bolton" in s["trusts"]],
        "mft": sorted(p.name for p in (demo_data / "mft").iterdir() if p.is_dir())[:2],
    }
    for trust, studies in wanted.items():
        for study in studies:
            shutil.copytree(demo_data / trust / study, root / trust / study)
    return {trust: root / trust for trust in wanted}


@pytest.fixture
def ops_document(config_document: dict[str, Any], small_folders: dict[str, Path], tmp_path: Path) -> dict[str, Any]:
    """The demo configuration cut to two small folder trusts, with its own audit store."""
    doc = copy.deepcopy(config_document)
    doc["trusts"] = [t for t in doc["trusts"] if t["id"] in TRUSTS]
    for trust in doc["trusts"]:
        trust["archive"]["path"] = str(small_folders[trust["id"]])
    doc.pop("patient_xref", None)
    doc["audit"] = {"path": str(tmp_path / "audit.sqlite")}
    doc["ops"] = {}
    return doc


@pytest.fixture
def build_app(ops_document: dict[str, Any], demo_data: Path) -> Iterator[BuildApp]:
    """build_app(ops={...}, federation={...}, bolton={archive settings}, mft={...}) -> a new facade app."""
    built: list[Flask] = []

    def build(
        ops: dict[str, Any] | None = None, federation: dict[str, Any] | None = None, **archives: dict[str, Any]
    ) -> Flask:
        doc = copy.deepcopy(ops_document)
        doc["ops"] = ops or {}
        for trust in doc["trusts"]:
            trust["archive"] = archives.get(trust["id"], trust["archive"])
        if federation is not None:
            doc["federation"] = federation
        with pytest.MonkeyPatch.context() as env:
            env.delenv(BASE_URL_ENV, raising=False)
            env.delenv(CURSOR_SECRET_ENV, raising=False)
            app = create_app(settings_from_document(doc, demo_data, "tests/ops"))
        built.append(app)
        return app

    saved_level = logging.getLogger().level
    yield build
    logging.getLogger().setLevel(saved_level)
    for app in built:
        federation = components(app).services.federation
        for trust in federation.trusts:
            trust.pool.shutdown(wait=True)
        federation.close()
        ops(app).readiness.close()
        components(app).audit.close()
