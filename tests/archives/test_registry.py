"""The archive registry: every archive type the settings schema admits has an entry, and each entry
builds its adapter, its image source (where one exists) and its readiness probe from validated
settings, against real archives: a folder of DICOM files written with pydicom, a DICOMweb service
on loopback (tests/archives/support.py), a dcmqrscp (dcmtk).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from app.archives import registry
from app.archives.cache import CachedArchive
from app.archives.dicomweb.qido import PROBE_STUDY_UID, DicomWebArchive
from app.archives.dicomweb.wado import HttpWado
from app.archives.dimse import DimseArchive
from app.archives.folder.archive import FolderArchive
from app.archives.folder.wado import FolderWado
from app.archives.images import WadoTarget
from app.archives.metered import MeteredArchive
from app.archives.protocol import Archive, Capabilities, Probe
from app.core.query import PatientKey, StudyQuery
from app.services.build import build_parts
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, Settings, TrustSettings, settings_from_document
from tests.archives.support import DicomWebService
from tests.infra import free_port
from tests.infra.dcmqrscp import DcmqrscpServer
from tests.infra.test_infra import Spec, write_instance

pytestmark = pytest.mark.integration

SCHEMA = Path(__file__).resolve().parents[2] / "app" / "settings" / "schema.json"
FOLDER, DICOMWEB, DIMSE = "bolton", "mft", "wwl"  # demo trusts matching PatientID = NHS number, issuer NHS


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two instances of one study, written with pydicom: (the folder, the study UID)."""
    root = tmp_path_factory.mktemp("registry-folder")
    study, series = generate_uid(), generate_uid()
    for number in (1, 2):
        spec = Spec(f"i{number}", "9434765919", "NHS", study, series, "CT", "20240105", "ACC1", instance_number=number)
        write_instance(root / f"{spec.name}.dcm", spec)
    return root, study


@pytest.fixture()
def dimse_server() -> Iterator[DcmqrscpServer]:
    with DcmqrscpServer(aet="LEGACY") as server:
        yield server


def configure(config_document: dict[str, Any], tmp_path: Path, archives: dict[str, dict[str, Any]]) -> Settings:
    """The demo configuration cut to the trusts named in `archives`, with those archive settings,
    validated against the schema like any configuration."""
    doc = copy.deepcopy(config_document)
    doc["trusts"] = [{**t, "archive": archives[t["id"]]} for t in doc["trusts"] if t["id"] in archives]
    doc.pop("patient_xref", None)
    doc["audit"] = {"path": str(tmp_path / "audit.sqlite")}
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BASE_URL_ENV, raising=False)
        env.delenv(CURSOR_SECRET_ENV, raising=False)
        return settings_from_document(doc, tmp_path, "tests/archives/registry")


def trust(settings: Settings, trust_id: str) -> TrustSettings:
    return next(t for t in settings.trusts if t.id == trust_id)


def options(timeout_s: float = 2.0) -> registry.ImageOptions:
    return registry.ImageOptions(timeout_s, chunk_bytes=65536, thumbnail_px=64)


def wrapped(archive: Archive) -> Archive:
    """The adapter as the federation holds it: metered, then cached."""
    return CachedArchive(MeteredArchive(archive), ttl_s=60)


def test_every_archive_type_of_the_schema_has_a_registry_entry() -> None:
    # The schema's enum is what makes a runtime branch for an unknown type unnecessary.
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    admitted = schema["$defs"]["archive"]["properties"]["type"]["enum"]
    assert sorted(admitted) == sorted(registry.ARCHIVE_TYPES) == ["dicomweb", "dimse", "folder"]


def test_folder_type_builds_adapter_image_source_and_probe(
    config_document: dict[str, Any], folder: tuple[Path, str], tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    shutil.copytree(folder[0], root)
    settings = configure(config_document, tmp_path, {FOLDER: {"type": "folder", "path": str(root)}})
    bolton = trust(settings, FOLDER)
    archive = registry.build_archive(bolton, 2.0)
    assert isinstance(archive, FolderArchive) and archive.name == FOLDER
    assert archive.capabilities == Capabilities(series_by_patient=True)
    studies = archive.find_studies(StudyQuery(patient=PatientKey("9434765919", "NHS")))
    assert [s["0020000D"]["Value"][0] for s in studies.datasets] == [folder[1]]

    source = registry.image_source(bolton, wrapped(archive), options())
    assert isinstance(source, FolderWado) and source.archive is archive and source.name == FOLDER
    retrieval = source.retrieve(WadoTarget(folder[1], resource="metadata"), "application/dicom+json", None, [])
    try:
        assert retrieval.status == 200
        assert len(json.loads(b"".join(retrieval.chunks))) == 2  # both instances of the study
    finally:
        retrieval.close()

    assert registry.probe(bolton, wrapped(archive), 1.0) == Probe(True)
    shutil.rmtree(root)
    assert registry.probe(bolton, wrapped(archive), 1.0) == Probe(False, "folder missing")


def test_dicomweb_type_builds_adapter_image_source_and_probe(
    config_document: dict[str, Any], dicomweb_service: DicomWebService, tmp_path: Path
) -> None:
    config = {
        "type": "dicomweb",
        "url": dicomweb_service.url,
        "page_size": 25,
        "auth": {"type": "basic", "username": "facade", "password": "secret"},
    }
    settings = configure(config_document, tmp_path, {DICOMWEB: config})
    mft = trust(settings, DICOMWEB)
    archive = registry.build_archive(mft, 2.0)
    try:
        assert isinstance(archive, DicomWebArchive) and archive.name == DICOMWEB
        assert (archive.url, archive.page_size, archive.timeout_s) == (dicomweb_service.url, 25, 2.0)
        assert archive.capabilities == Capabilities(series_by_patient=True, conversations=True)

        # The image source shares the archive's session and credentials; WADO-RS at the QIDO-RS base.
        source = registry.image_source(mft, wrapped(archive), options())
        assert isinstance(source, HttpWado) and source.name == DICOMWEB
        assert source.session is archive.session and source.auth is archive.auth
        study = generate_uid()
        retrieval = source.retrieve(WadoTarget(study, resource="metadata"), "application/dicom+json", None, [])
        retrieval.close()
        assert retrieval.status == 200
        target, authorization = dicomweb_service.requests[-1]
        assert target == f"/dicom-web/studies/{study}/metadata"
        assert authorization is not None and authorization.startswith("Basic ")

        dicomweb_service.clear()
        assert registry.probe(mft, wrapped(archive), 1.0) == Probe(True)
        assert [t for t, _auth in dicomweb_service.requests] == [
            f"/dicom-web/studies?StudyInstanceUID={PROBE_STUDY_UID}&limit=1"
        ]
        assert dicomweb_service.requests[0][1] == authorization  # the probe uses the archive's credentials
    finally:
        archive.close()


def test_dicomweb_wado_url_is_where_images_come_from(config_document: dict[str, Any], tmp_path: Path) -> None:
    url, wado = "http://127.0.0.1:9/dicom-web", "http://127.0.0.1:9/wado-rs"
    settings = configure(config_document, tmp_path, {DICOMWEB: {"type": "dicomweb", "url": url, "wado_url": wado}})
    mft = trust(settings, DICOMWEB)
    archive = registry.build_archive(mft, 2.0)
    source = registry.image_source(mft, archive, options())
    archive.close()
    assert isinstance(source, HttpWado) and source.base_url == wado


def test_dicomweb_probe_of_an_archive_that_is_not_there(config_document: dict[str, Any], tmp_path: Path) -> None:
    config = {"type": "dicomweb", "url": f"http://127.0.0.1:{free_port()}/dicom-web"}
    mft = trust(configure(config_document, tmp_path, {DICOMWEB: config}), DICOMWEB)
    archive = registry.build_archive(mft, 2.0)
    assert registry.probe(mft, archive, 1.0) == Probe(False, "connection refused or reset")
    archive.close()


def test_dimse_type_builds_adapter_image_source_and_probe(
    config_document: dict[str, Any], dimse_server: DcmqrscpServer, tmp_path: Path
) -> None:
    config = {
        "type": "dimse",
        "host": dimse_server.host,
        "port": dimse_server.port,
        "called_aet": dimse_server.aet,
        "calling_aet": "REGISTRY",
    }
    wado = "http://127.0.0.1:9/wado-rs"
    settings = configure(config_document, tmp_path, {DIMSE: config})
    with_wado = configure(config_document, tmp_path, {DIMSE: {**config, "wado_url": wado}})
    wwl = trust(settings, DIMSE)
    archive = registry.build_archive(wwl, 2.0)
    try:
        assert isinstance(archive, DimseArchive) and archive.name == DIMSE
        assert (archive.host, archive.port, archive.called_aet, archive.calling_aet, archive.timeout_s) == (
            dimse_server.host,
            dimse_server.port,
            dimse_server.aet,
            "REGISTRY",
            2.0,
        )
        assert archive.capabilities == Capabilities(series_by_patient=False)  # series wait for their studies
        assert archive.find_studies(StudyQuery(patient=PatientKey("NOBODY"))).datasets == []  # C-FIND answers

        assert registry.image_source(wwl, wrapped(archive), options()) is None  # C-FIND finds, retrieves nothing
        source = registry.image_source(trust(with_wado, DIMSE), archive, options(3.0))
        assert isinstance(source, HttpWado) and (source.name, source.base_url, source.timeout_s) == (DIMSE, wado, 3.0)

        assert registry.probe(wwl, wrapped(archive), 2.0) == Probe(True)
        dimse_server.stop()
        assert registry.probe(wwl, wrapped(archive), 2.0) == Probe(False, "connection refused or unreachable")
    finally:
        archive.close()


def test_wrappers_pass_the_adapter_and_its_capabilities_on(folder: tuple[Path, str]) -> None:
    archive = FolderArchive(FOLDER, folder[0])
    outer = wrapped(archive)
    assert outer.adapter is archive and outer.capabilities is archive.capabilities
    assert isinstance(outer, Archive)


def test_an_adapter_of_another_type_is_refused(
    config_document: dict[str, Any], folder: tuple[Path, str], tmp_path: Path
) -> None:
    # Only a caller mixing up two trusts can do this: it is a bug, never a configuration, so it raises.
    settings = configure(
        config_document, tmp_path, {DICOMWEB: {"type": "dicomweb", "url": "http://127.0.0.1:9/dicom-web"}}
    )
    with pytest.raises(TypeError, match="FolderArchive is not a DicomWebArchive"):
        registry.probe(trust(settings, DICOMWEB), FolderArchive(FOLDER, folder[0]), 1.0)


def test_facade_gets_an_image_source_for_every_trust_that_offers_images(
    config_document: dict[str, Any], folder: tuple[Path, str], dicomweb_service: DicomWebService, tmp_path: Path
) -> None:
    settings = configure(
        config_document,
        tmp_path,
        {
            FOLDER: {"type": "folder", "path": str(folder[0])},
            DICOMWEB: {"type": "dicomweb", "url": dicomweb_service.url},
            DIMSE: {"type": "dimse", "host": "127.0.0.1", "port": free_port(), "called_aet": "NOBODY"},
        },
    )
    facade = build_parts(settings)
    try:
        assert {trust_id: type(source) for trust_id, source in facade.image_sources.items()} == {
            FOLDER: FolderWado,
            DICOMWEB: HttpWado,
        }
        capabilities = {t.settings.id: t.archive.capabilities.series_by_patient for t in facade.federation.trusts}
        assert capabilities == {FOLDER: True, DICOMWEB: True, DIMSE: False}
    finally:
        for t in facade.federation.trusts:
            t.pool.shutdown(wait=True)
        facade.federation.close()
