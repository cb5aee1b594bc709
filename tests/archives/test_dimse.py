"""DimseArchive against a real dcmqrscp (dcmtk) on loopback, and against peers that misbehave.

The corpus: P1 (issuer TRUST-A) with study A (CT series of 2 instances + MR series) and study B (MR),
P2 (no issuer) with study C (CT, 2 instances). Faults a real archive cannot produce on demand come
from a TCP socket that never answers and from a pynetdicom SCP whose C-FIND handler misbehaves.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
import pytest
from pydicom.dataset import Dataset as DicomDataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from app.archives.dimse import DimseArchive
from app.archives.folder.archive import FolderArchive
from app.archives.protocol import Archive, ArchiveError, Found
from app.core.mapping.context import TrustMapping
from app.core.mapping.tables import load_mapper
from app.core.query import PatientKey, StudyQuery
from tests.infra import free_port
from tests.infra.dcmqrscp import DcmqrscpServer
from tests.infra.test_infra import Spec, write_instance

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Corpus:
    folder: Path
    study_a: str
    study_b: str
    study_c: str
    ct_a: str
    mr_a: str
    sop_c: str


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    folder = tmp_path_factory.mktemp("dimse-corpus")
    a, b, c, ct_a, mr_a, ct_c = (generate_uid() for _ in range(6))
    specs = [
        Spec("a1", "P1", "TRUST-A", a, ct_a, "CT", "20200115", "ACC1"),
        Spec("a2", "P1", "TRUST-A", a, ct_a, "CT", "20200115", "ACC1", instance_number=2),
        Spec("a3", "P1", "TRUST-A", a, mr_a, "MR", "20200115", "ACC1", series_number=2),
        Spec("b1", "P1", "TRUST-A", b, generate_uid(), "MR", "20210301", "ACC2"),
        Spec("c1", "P2", "", c, ct_c, "CT", "20200601", "ACC3"),
        Spec("c2", "P2", "", c, ct_c, "CT", "20200601", "ACC3", instance_number=2),
    ]
    files = [write_instance(folder / f"{spec.name}.dcm", spec) for spec in specs]
    return Corpus(folder, a, b, c, ct_a, mr_a, pydicom.dcmread(files[-1]).SOPInstanceUID)


@pytest.fixture(scope="module")
def server(corpus: Corpus) -> Iterator[DcmqrscpServer]:
    with DcmqrscpServer(aet="LEGACY") as started:
        started.store(sorted(corpus.folder.glob("*.dcm")))
        yield started


@pytest.fixture(scope="module")
def archive(server: DcmqrscpServer) -> Iterator[DimseArchive]:
    legacy = DimseArchive("legacy", server.host, server.port, server.aet, "FACADE", 5.0)
    yield legacy
    legacy.close()


def first(ds: dict[str, Any], tag: str) -> Any:
    return (ds.get(tag, {}).get("Value") or [None])[0]


def study_uids(found: Found) -> set[str]:
    return {first(ds, "0020000D") for ds in found.datasets}


def test_is_an_archive(archive: DimseArchive) -> None:
    assert isinstance(archive, Archive)


def test_studies_by_patient(archive: DimseArchive, corpus: Corpus) -> None:
    found = archive.find_studies(StudyQuery(patient=PatientKey("P1")))
    assert found.incomplete is None and study_uids(found) == {corpus.study_a, corpus.study_b}
    study = next(ds for ds in found.datasets if first(ds, "0020000D") == corpus.study_a)
    assert study["00100020"] == {"vr": "LO", "Value": ["P1"]}
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Test^Patient"}]}
    assert (first(study, "00100021"), first(study, "00080020"), first(study, "00080050")) == (
        "TRUST-A",
        "20200115",
        "ACC1",
    )
    # neither the Q/R bookkeeping nor the empty return keys nor what dcmqrscp cannot give
    for absent in ("00080052", "00080054", "00081060", "00080061", "00201206", "00201208"):
        assert absent not in study
    assert all(len(tag) == 8 and "Value" in element for tag, element in study.items())

    assert study_uids(archive.find_studies(StudyQuery(patient=PatientKey("P1", "TRUST-A")))) == {
        corpus.study_a,
        corpus.study_b,
    }
    assert archive.find_studies(StudyQuery(patient=PatientKey("P1", "TRUST-Z"))).datasets == []
    p2 = archive.find_studies(StudyQuery(patient=PatientKey("P2")))
    assert study_uids(p2) == {corpus.study_c} and "00100021" not in p2.datasets[0]


def test_studies_by_uid_list_accession_and_dates(archive: DimseArchive, corpus: Corpus) -> None:
    def uids(**fields: Any) -> set[str]:
        return study_uids(archive.find_studies(StudyQuery(**fields)))

    assert uids(study_uids=(corpus.study_a, corpus.study_c)) == {corpus.study_a, corpus.study_c}
    assert uids(study_uids=(corpus.study_b,)) == {corpus.study_b}
    assert uids(accession_number="ACC2") == {corpus.study_b}
    assert uids(date_from="20200101", date_to="20201231") == {corpus.study_a, corpus.study_c}
    assert uids(patient=PatientKey("P1"), date_from="20210101") == {corpus.study_b}
    assert uids(patient=PatientKey("P1"), date_to="20200131") == {corpus.study_a}
    # dcmqrscp ignores ModalitiesInStudy: the MR-only study comes back; the federation filters on series
    assert uids(patient=PatientKey("P1"), modalities=("CT",)) == {corpus.study_a, corpus.study_b}


def test_empty_result(archive: DimseArchive) -> None:
    assert archive.find_studies(StudyQuery(patient=PatientKey("NOBODY"))) == Found([])
    assert archive.find_series(StudyQuery(patient=PatientKey("NOBODY")), ()) == Found([])
    assert archive.find_instances(generate_uid()) == Found([])


def test_patient_search_costs_one_c_find_per_study_plus_one(
    archive: DimseArchive, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels: list[str] = []
    original = DimseArchive._find

    def counting(self: DimseArchive, assoc: Any, level: str, *args: Any) -> Any:
        levels.append(level)
        return original(self, assoc, level, *args)

    monkeypatch.setattr(DimseArchive, "_find", counting)
    query = StudyQuery(patient=PatientKey("P1", "TRUST-A"))
    studies = archive.find_studies(query)
    series = archive.find_series(query, tuple(sorted(study_uids(studies))))
    assert levels == ["STUDY", "SERIES", "SERIES"]
    assert series.incomplete is None
    by_study = {(first(s, "0020000D"), first(s, "00080060")) for s in series.datasets}
    assert by_study == {(corpus.study_a, "CT"), (corpus.study_a, "MR"), (corpus.study_b, "MR")}
    ct = next(s for s in series.datasets if first(s, "0020000E") == corpus.ct_a)
    assert first(ct, "00200011") == 1 and "00080052" not in ct


def test_instances(archive: DimseArchive, corpus: Corpus) -> None:
    found = archive.find_instances(corpus.study_a)
    assert sorted(first(i, "0020000E") for i in found.datasets) == sorted([corpus.ct_a, corpus.ct_a, corpus.mr_a])
    ct = archive.find_instances(corpus.study_a, corpus.ct_a)
    assert sorted(first(i, "00200013") for i in ct.datasets) == [1, 2]
    assert all(first(i, "0020000D") == corpus.study_a and first(i, "00080018") for i in ct.datasets)
    # dcmqrscp's index has no SOPClassUID: left absent, never guessed
    assert all("00080016" not in i for i in ct.datasets)


def test_series_and_instance_lookups(archive: DimseArchive, corpus: Corpus) -> None:
    assert study_uids(archive.find_studies(StudyQuery(series_uid=corpus.mr_a))) == {corpus.study_a}
    assert archive.find_studies(StudyQuery(patient=PatientKey("P2"), series_uid=corpus.mr_a)).datasets == []
    assert archive.find_studies(StudyQuery(study_uids=(corpus.study_b,), series_uid=corpus.mr_a)).datasets == []
    assert study_uids(archive.find_studies(StudyQuery(sop_instance_uid=corpus.sop_c))) == {corpus.study_c}
    assert archive.find_studies(StudyQuery(sop_instance_uid=generate_uid())).datasets == []


def test_adapter_json_maps_like_the_folder_archive(archive: DimseArchive, corpus: Corpus) -> None:
    mapper = load_mapper()
    trust = TrustMapping(
        id="legacy",
        ods_code="R0A",
        name="Legacy Trust",
        zone=ZoneInfo("Europe/London"),
        accession_system="https://example.org/accession",
        endpoint_id="R0A-wado-rs",
    )
    query = StudyQuery(study_uids=(corpus.study_a,))
    subject = {"identifier": {"system": "https://example.org/local", "value": "P1"}}

    def mapped(source: Any, issues: list[dict[str, Any]]) -> dict[str, Any]:
        (study,) = source.find_studies(query).datasets
        series = source.find_series(query, (corpus.study_a,)).datasets
        result = mapper.map_study(study, series, None, trust, subject, issues)
        assert result is not None
        return result

    issues: list[dict[str, Any]] = []
    legacy = mapped(archive, issues)
    reference = mapped(FolderArchive("folder", corpus.folder), [])
    assert issues == []
    assert legacy["id"] == corpus.study_a and legacy["started"] == reference["started"]
    assert sorted(c["code"] for c in legacy["modality"]) == ["CT", "MR"]  # derived from the series
    assert legacy["numberOfSeries"] == 2 and "numberOfInstances" not in legacy  # not pretended
    for key in ("identifier", "subject", "referrer", "description", "procedureCode"):
        if key in legacy:
            assert legacy[key] == reference[key], key
    assert [(s["uid"], s["number"], s["modality"]) for s in legacy["series"]] == [
        (s["uid"], s["number"], s["modality"]) for s in reference["series"]
    ]


# ------------------------------------------------------------------------------ failures
def test_connection_refused_fails_fast() -> None:
    legacy = DimseArchive("legacy", "127.0.0.1", free_port(), "LEGACY", "FACADE", TIMEOUT_S)
    began = time.monotonic()
    with pytest.raises(ArchiveError) as caught:
        legacy.find_studies(StudyQuery(patient=PatientKey("P1")))
    assert time.monotonic() - began < 0.5
    assert caught.value.archive == "legacy" and caught.value.reason == "connection refused or unreachable"


def test_unknown_called_aet_is_rejected(server: DcmqrscpServer) -> None:
    legacy = DimseArchive("legacy", server.host, server.port, "NOT-LEGACY", "FACADE", TIMEOUT_S)
    with pytest.raises(ArchiveError, match="association rejected"):
        legacy.find_studies(StudyQuery(patient=PatientKey("P1")))


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A TCP server that accepts connections and never says anything."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in held:
        conn.close()


def test_silent_peer_times_out(silent_port: int) -> None:
    legacy = DimseArchive("legacy", "127.0.0.1", silent_port, "LEGACY", "FACADE", TIMEOUT_S)
    began = time.monotonic()
    with pytest.raises(ArchiveError) as caught:
        legacy.find_studies(StudyQuery(patient=PatientKey("P1")))
    assert time.monotonic() - began < TIMEOUT_S + 1
    assert caught.value.reason == "no association response within 1 s"


@pytest.fixture()
def scp() -> Iterator[tuple[int, list[str]]]:
    """A pynetdicom Find SCP; the test sets its behaviour in the returned list."""
    mode: list[str] = ["slow"]
    release = threading.Event()

    def handle(event: Any) -> Iterator[tuple[int, DicomDataset | None]]:
        if mode[0] == "slow":
            release.wait(5)
            return
        if mode[0] == "failure":
            yield 0xC311, None
            return
        if mode[0] == "trickle":  # each answer within the DIMSE timeout, the whole C-FIND not
            for n in range(6):
                if release.wait(0.4):
                    return
                match = DicomDataset()
                match.StudyInstanceUID = f"1.2.{n}"
                yield 0xFF00, match
            return
        match = DicomDataset()
        match.QueryRetrieveLevel = "STUDY"
        match.StudyInstanceUID = "1.2.3"
        match.StudyDescription = ""
        yield 0xFF01, match
        yield 0xFE00, None

    ae = AE(ae_title="FAKE")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, handle)])
    assert server is not None
    yield server.server_address[1], mode
    release.set()
    ae.shutdown()


def test_c_find_statuses_and_dimse_timeout(scp: tuple[int, list[str]]) -> None:
    port, mode = scp
    legacy = DimseArchive("legacy", "127.0.0.1", port, "FAKE", "FACADE", TIMEOUT_S)
    query = StudyQuery(patient=PatientKey("P1"))
    for slow in ("slow", "trickle"):
        mode[0], began = slow, time.monotonic()
        with pytest.raises(ArchiveError, match="C-FIND not finished within 1 s"):
            legacy.find_studies(query)
        assert time.monotonic() - began < TIMEOUT_S + 1
    mode[0] = "failure"
    with pytest.raises(ArchiveError, match="C-FIND failed with status 0xC311"):
        legacy.find_studies(query)
    mode[0] = "cancel"
    found = legacy.find_studies(query)
    assert found == Found([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}], incomplete="cancelled")
    legacy.close()


def test_identifier_allows_only_the_name_searchs_trailing_wildcard() -> None:
    from app.archives.dimse import identifier

    assert identifier("STUDY", {"PatientName": "Smi*"}, ()).PatientName == "Smi*"
    for keys in (
        {"PatientName": "*"},
        {"PatientName": "S*m*"},
        {"PatientID": "943*"},
        {"AccessionNumber": "A?"},
        {"PatientName": "Smith\\Jones*"},
    ):
        with pytest.raises(ValueError):
            identifier("STUDY", keys, ())
