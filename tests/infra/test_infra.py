"""Proves that the real test archives and the fault proxy work (no mocks).

Missing binaries make these tests fail (never skip) with a hint to run
scripts/install-system-deps.sh.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from tests.infra import InfraError, require_binary
from tests.infra.dcmqrscp import DcmqrscpServer
from tests.infra.faultproxy import FAULT_KINDS, FaultProxy
from tests.infra.orthanc import OrthancServer, find_dicomweb_plugin

pytestmark = pytest.mark.integration

DICOM_JSON = "application/dicom+json"


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Spec:
    name: str
    patient_id: str
    issuer: str
    study: str
    series: str
    modality: str
    study_date: str
    accession: str
    series_number: int = 1
    instance_number: int = 1


def write_instance(path: Path, spec: Spec) -> Path:
    """A tiny valid Part 10 image (2x2 pixels) with the identifiers of ``spec``."""
    sop_class = CTImageStorage if spec.modality == "CT" else MRImageStorage
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = "Test^Patient"
    ds.PatientID = spec.patient_id
    ds.IssuerOfPatientID = spec.issuer
    other = Dataset()
    other.PatientID = "NHS" + spec.patient_id
    other.IssuerOfPatientID = "NHS"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = spec.study
    ds.SeriesInstanceUID = spec.series
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = spec.accession
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = spec.issuer
    ds.IssuerOfAccessionNumberSequence = Sequence([issuer])
    code = Dataset()
    code.CodeValue = "CTHEAD"
    code.CodingSchemeDesignator = "LOCAL"
    code.CodeMeaning = "CT Head"
    ds.ProcedureCodeSequence = Sequence([code])
    ds.StudyDescription = "Head study"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = "Ref^Doc"
    ds.Modality = spec.modality
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = f"{spec.modality} series {spec.series_number}"
    ds.BodyPartExamined = "HEAD"
    ds.InstanceNumber = spec.instance_number
    ds.Rows = 2
    ds.Columns = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(8))
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass(frozen=True)
class Corpus:
    files: list[Path]
    study_a: str  # P1, 2020-01-15, CT (2 instances) + MR series
    study_b: str  # P1, 2021-03-01, MR
    study_c: str  # P2, 2020-06-01, CT, issuer TRUST-B


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    folder = tmp_path_factory.mktemp("dicom")
    study_a, study_b, study_c = generate_uid(), generate_uid(), generate_uid()
    ct_a, mr_a = generate_uid(), generate_uid()
    specs = [
        Spec("a1", "P1", "TRUST-A", study_a, ct_a, "CT", "20200115", "ACC1"),
        Spec(
            "a2",
            "P1",
            "TRUST-A",
            study_a,
            ct_a,
            "CT",
            "20200115",
            "ACC1",
            instance_number=2,
        ),
        Spec(
            "a3",
            "P1",
            "TRUST-A",
            study_a,
            mr_a,
            "MR",
            "20200115",
            "ACC1",
            series_number=2,
        ),
        Spec("b1", "P1", "TRUST-A", study_b, generate_uid(), "MR", "20210301", "ACC2"),
        Spec("c1", "P2", "TRUST-B", study_c, generate_uid(), "CT", "20200601", "ACC3"),
    ]
    files = [write_instance(folder / f"{spec.name}.dcm", spec) for spec in specs]
    return Corpus(files, study_a, study_b, study_c)


# ------------------------------------------------------------------- helpers
def value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def values(item: dict[str, Any], tag: str) -> list[Any]:
    return list(item.get(tag, {}).get("Value", []))


def raw_get(base_url: str, target: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """GET with the request target sent byte for byte (no client-side re-quoting)."""
    host_port = base_url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", target)
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


# ------------------------------------------------------------ prerequisites
def test_system_binaries_are_installed() -> None:
    for name in ("Orthanc", "dcmqrscp", "storescu"):
        try:
            require_binary(name)
        except InfraError as exc:
            pytest.fail(str(exc))
    try:
        assert Path(find_dicomweb_plugin()).is_file()
    except InfraError as exc:
        pytest.fail(str(exc))


# ------------------------------------------------------------------- Orthanc
@pytest.fixture(scope="module")
def orthanc(corpus: Corpus) -> Iterator[OrthancServer]:
    with OrthancServer(aet="TRUSTA") as server:
        answers = server.upload(corpus.files)
        assert [a["Status"] for a in answers] == ["Success"] * len(corpus.files)
        yield server


def qido(server_url: str, path: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    reply = requests.get(server_url + path, params=params, headers={"Accept": DICOM_JSON}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith(DICOM_JSON)
    result = reply.json()
    assert isinstance(result, list)
    return result


def test_orthanc_starts_with_dicomweb(orthanc: OrthancServer) -> None:
    system = orthanc.get_json("/system")
    assert system["DicomAet"] == "TRUSTA"
    assert system["DicomPort"] == orthanc.dicom_port
    assert "dicom-web" in orthanc.get_json("/plugins")
    assert orthanc.dicomweb_url == orthanc.url + "/dicom-web"
    assert orthanc.startup_seconds is not None and orthanc.startup_seconds < 20


def test_orthanc_qido_studies_by_patient(orthanc: OrthancServer, corpus: Corpus) -> None:
    studies = qido(orthanc.dicomweb_url, "/studies", [("PatientID", "P1")])
    by_uid = {value(s, "0020000D"): s for s in studies}
    assert set(by_uid) == {corpus.study_a, corpus.study_b}
    study_a = by_uid[corpus.study_a]
    assert sorted(values(study_a, "00080061")) == ["CT", "MR"]  # ModalitiesInStudy
    assert value(study_a, "00201206") == 2  # NumberOfStudyRelatedSeries
    assert value(study_a, "00201208") == 3  # NumberOfStudyRelatedInstances
    assert value(study_a, "00080050") == "ACC1"
    assert value(study_a, "00080005") == "ISO_IR 192"  # DefaultEncoding Utf8


def test_orthanc_qido_series_across_studies_by_patient(orthanc: OrthancServer, corpus: Corpus) -> None:
    series = qido(orthanc.dicomweb_url, "/series", [("PatientID", "P1")])
    assert len(series) == 3
    assert {value(s, "0020000D") for s in series} == {corpus.study_a, corpus.study_b}
    assert sorted(value(s, "00080060") for s in series) == ["CT", "MR", "MR"]
    # study-level attributes come along when no StudyInstanceUID is in the path
    assert all(value(s, "00100020") == "P1" and value(s, "00080020") for s in series)


def test_orthanc_qido_matching_capabilities(orthanc: OrthancServer, corpus: Corpus) -> None:
    url = orthanc.dicomweb_url

    def uids(path: str, params: list[tuple[str, str]]) -> set[str]:
        return {value(s, "0020000D") for s in qido(url, path, params)}

    assert uids("/studies", [("ModalitiesInStudy", "CT")]) == {
        corpus.study_a,
        corpus.study_c,
    }
    assert uids("/studies", [("PatientID", "P1"), ("ModalitiesInStudy", "MR")]) == {
        corpus.study_a,
        corpus.study_b,
    }
    assert uids("/studies", [("StudyDate", "20200101-20201231")]) == {
        corpus.study_a,
        corpus.study_c,
    }
    assert uids("/studies", [("StudyDate", "20210101-")]) == {corpus.study_b}
    assert uids("/studies", [("StudyDate", "-20200131")]) == {corpus.study_a}
    assert uids("/studies", [("AccessionNumber", "ACC2")]) == {corpus.study_b}
    assert uids("/studies", [("PatientID", "P1"), ("IssuerOfPatientID", "TRUST-B")]) == set()
    assert uids("/series", [("PatientID", "P1"), ("StudyDate", "20210101-")]) == {corpus.study_b}

    everything = qido(url, "/studies", [])
    assert len(everything) == 3
    page = qido(url, "/studies", [("limit", "1"), ("offset", "1")])
    assert len(page) == 1 and page[0] == everything[1]
    assert len(qido(url, "/studies", [("offset", "2")])) == 1


def test_orthanc_qido_includefield(orthanc: OrthancServer) -> None:
    params = [("PatientID", "P2")]
    for name in (
        "IssuerOfPatientID",
        "StudyDescription",
        "OtherPatientIDsSequence",
        "ProcedureCodeSequence",
    ):
        params.append(("includefield", name))
    (study,) = qido(orthanc.dicomweb_url, "/studies", params)
    assert value(study, "00100021") == "TRUST-B"  # non-main tag, read from the stored file
    assert value(study, "00081030") == "Head study"
    # sequences are silently dropped by Orthanc 1.10.1 + DICOMweb 1.7
    assert "00101002" not in study and "00081032" not in study and "00080051" not in study
    # comma-separated includefield works only when the comma is sent raw
    status, _headers, body = raw_get(
        orthanc.url,
        "/dicom-web/studies?PatientID=P2&includefield=IssuerOfPatientID,StudyDescription",
    )
    (raw_study,) = json.loads(body)
    assert status == 200 and value(raw_study, "00100021") == "TRUST-B" and value(raw_study, "00081030")
    (encoded,) = qido(
        orthanc.dicomweb_url,
        "/studies",
        [("PatientID", "P2"), ("includefield", "00100021,00081030")],
    )
    assert "00100021" not in encoded  # requests sends %2C: not split by this plugin version


def test_orthanc_qido_does_not_percent_decode_values(orthanc: OrthancServer) -> None:
    """Orthanc 1.10.1 + DICOMweb 1.7 match query values *literally*: %XX and + are not decoded."""

    def count(target: str) -> int:
        status, _headers, body = raw_get(orthanc.url, target)
        assert status == 200
        return len(json.loads(body))

    assert count("/dicom-web/studies?PatientName=Test^Patient") == 3
    assert count("/dicom-web/studies?PatientName=Test%5EPatient") == 0
    assert count("/dicom-web/studies?StudyDescription=Head%20study") == 0
    assert count("/dicom-web/studies?StudyDescription=Head+study") == 0
    assert count("/dicom-web/studies?PatientID=P*") == 3  # wildcards work when sent raw
    assert count("/dicom-web/studies?PatientID=P%2A") == 0


# ------------------------------------------------------------------ dcmqrscp
@pytest.fixture(scope="module")
def dcmqrscp(corpus: Corpus) -> Iterator[DcmqrscpServer]:
    with DcmqrscpServer(aet="LEGACY") as server:
        server.store(corpus.files)
        yield server


def c_find(server: DcmqrscpServer, query: Dataset) -> tuple[int, list[Dataset]]:
    ae = AE(ae_title="FACADE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(server.host, server.port, ae_title=server.aet)
    assert assoc.is_established
    found: list[Dataset] = []
    final = -1
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            assert status, "C-FIND got no status (association aborted?)"
            if status.Status in (0xFF00, 0xFF01):
                assert identifier is not None
                found.append(identifier)
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return final, found


def make_query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, wanted in keys.items():
        setattr(ds, keyword, wanted)
    return ds


def test_dcmqrscp_echo(dcmqrscp: DcmqrscpServer) -> None:
    ok, detail = dcmqrscp.echo()
    assert ok, detail
    assert dcmqrscp.startup_seconds is not None


def test_dcmqrscp_find_studies(dcmqrscp: DcmqrscpServer, corpus: Corpus) -> None:
    query = make_query(
        "STUDY",
        PatientID="P1",
        StudyInstanceUID="",
        StudyDate="",
        AccessionNumber="",
        IssuerOfPatientID="",
        StudyDescription="",
        ModalitiesInStudy="",
        NumberOfStudyRelatedSeries="",
    )
    final, found = c_find(dcmqrscp, query)
    assert final == 0x0000
    assert {ds.StudyInstanceUID for ds in found} == {corpus.study_a, corpus.study_b}
    for ds in found:
        assert ds.IssuerOfPatientID == "TRUST-A"
        assert ds.StudyDescription == "Head study"
        assert ds.RetrieveAETitle == "LEGACY"
        # not in dcmqrscp's fixed key set: silently dropped
        assert "ModalitiesInStudy" not in ds and "NumberOfStudyRelatedSeries" not in ds

    # ModalitiesInStudy is not a matching key either: the MR-only study still matches "CT"
    final, found = c_find(
        dcmqrscp,
        make_query("STUDY", PatientID="P1", StudyInstanceUID="", ModalitiesInStudy="CT"),
    )
    assert final == 0 and len(found) == 2

    final, found = c_find(
        dcmqrscp,
        make_query("STUDY", StudyDate="20200101-20201231", StudyInstanceUID=""),
    )
    assert final == 0 and {ds.StudyInstanceUID for ds in found} == {
        corpus.study_a,
        corpus.study_c,
    }


def test_dcmqrscp_find_series(dcmqrscp: DcmqrscpServer, corpus: Corpus) -> None:
    query = make_query(
        "SERIES",
        StudyInstanceUID=corpus.study_a,
        SeriesInstanceUID="",
        Modality="",
        SeriesNumber="",
    )
    final, found = c_find(dcmqrscp, query)
    assert final == 0
    assert sorted(ds.Modality for ds in found) == ["CT", "MR"]
    # hierarchical model: a SERIES query without the study's unique key is refused
    final, found = c_find(
        dcmqrscp,
        make_query("SERIES", PatientID="P1", SeriesInstanceUID="", Modality=""),
    )
    assert final == 0xC000 and found == []


# ---------------------------------------------------------------- FaultProxy
@pytest.fixture()
def proxy(orthanc: OrthancServer) -> Iterator[FaultProxy]:
    with FaultProxy(orthanc.dicomweb_url) as fault_proxy:
        yield fault_proxy


STUDIES_P1 = "/studies?PatientID=P1"

Check = Callable[[Any, list[dict[str, Any]]], None]


def expect_forwarded(reply: requests.Response, direct: list[dict[str, Any]]) -> None:
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith(DICOM_JSON)
    assert reply.json() == direct


def expect_status(reply: requests.Response, _direct: list[dict[str, Any]]) -> None:
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "2"
    assert reply.json() == {"error": "busy"}


def expect_429(reply: requests.Response, _direct: list[dict[str, Any]]) -> None:
    assert reply.status_code == 429 and reply.content == b""


def expect_empty(reply: requests.Response, _direct: list[dict[str, Any]]) -> None:
    assert reply.status_code == 200 and reply.json() == []


def expect_no_content(reply: requests.Response, _direct: list[dict[str, Any]]) -> None:
    assert reply.status_code == 204 and reply.content == b""


def expect_206(reply: requests.Response, direct: list[dict[str, Any]]) -> None:
    assert reply.status_code == 206 and reply.json() == direct


def expect_bad_json(reply: requests.Response, _direct: list[dict[str, Any]]) -> None:
    assert reply.status_code == 200
    with pytest.raises(ValueError):
        reply.json()


def expect_html(reply: requests.Response, direct: list[dict[str, Any]]) -> None:
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    assert json.loads(reply.content) == direct


def expect_warning(reply: requests.Response, direct: list[dict[str, Any]]) -> None:
    expect_forwarded(reply, direct)
    warning = reply.headers["Warning"]
    assert warning.startswith("299 127.0.0.1:")
    assert '"The number of results exceeded the maximum supported by the server.' in warning


def expect_truncated(reply: requests.Response, direct: list[dict[str, Any]]) -> None:
    assert reply.status_code == 200 and len(direct) == 2
    assert reply.json() == direct[:1]


def expect_delayed(reply: requests.Response, direct: list[dict[str, Any]]) -> None:
    expect_forwarded(reply, direct)
    assert reply.elapsed.total_seconds() >= 0.4


FAULT_CASES: list[tuple[str, dict[str, Any], Check | type[Exception]]] = [
    ("none", {}, expect_forwarded),
    ("delay", {"seconds": 0.4}, expect_delayed),
    ("hang", {}, requests.exceptions.ReadTimeout),
    (
        "status",
        {"code": 503, "headers": {"Retry-After": "2"}, "body": '{"error": "busy"}'},
        expect_status,
    ),
    ("status", {"code": 429}, expect_429),
    ("empty-200", {}, expect_empty),
    ("no-content", {}, expect_no_content),
    ("partial-206", {}, expect_206),
    ("bad-json", {}, expect_bad_json),
    ("wrong-content-type", {}, expect_html),
    ("warning-299", {}, expect_warning),
    ("truncate", {"count": 1}, expect_truncated),
    ("reset", {}, requests.exceptions.ConnectionError),
    ("reset-midstream", {}, requests.exceptions.ChunkedEncodingError),
]


def test_every_fault_kind_is_covered() -> None:
    assert {kind for kind, _params, _expect in FAULT_CASES} == FAULT_KINDS


@pytest.mark.parametrize(
    ("kind", "params", "expect"),
    FAULT_CASES,
    ids=[f"{k}-{i}" for i, (k, _p, _e) in enumerate(FAULT_CASES)],
)
def test_fault_kinds(
    proxy: FaultProxy,
    orthanc: OrthancServer,
    kind: str,
    params: dict[str, Any],
    expect: Check | type[Exception],
) -> None:
    direct = qido(orthanc.dicomweb_url, "/studies", [("PatientID", "P1")])
    proxy.set_fault(kind, **params)
    if isinstance(expect, type):
        with pytest.raises(expect):
            requests.get(proxy.url + STUDIES_P1, timeout=(2, 0.5))
    else:
        expect(requests.get(proxy.url + STUDIES_P1, timeout=10), direct)
    assert proxy.requests == [("GET", "/dicom-web" + STUDIES_P1)]
    assert proxy.wildcard_requests() == []


def test_proxy_forwards_post_body_headers_and_raw_query(proxy: FaultProxy, orthanc: OrthancServer) -> None:
    # raw target with '^' and '*' reaches Orthanc unchanged (it would not match if re-quoted)
    status, _headers, body = raw_get(proxy.base_url, "/dicom-web/studies?PatientName=Test^Pat*")
    assert status == 200 and len(json.loads(body)) == 3
    assert proxy.requests[-1] == ("GET", "/dicom-web/studies?PatientName=Test^Pat*")
    assert proxy.wildcard_requests() == ["/dicom-web/studies?PatientName=Test^Pat*"]

    reply = requests.post(
        proxy.url + "/studies",  # STOW-RS without a multipart body: Orthanc rejects it
        data=b"not multipart",
        headers={"Content-Type": "text/plain", "X-Trace": "abc"},
        timeout=10,
    )
    assert reply.status_code >= 400
    assert proxy.requests[-1] == ("POST", "/dicom-web/studies")
    assert proxy.request_headers[-1]["X-Trace"] == "abc"


def test_proxy_fault_for_limited_times(proxy: FaultProxy) -> None:
    proxy.set_fault("status", code=503, times=1)
    assert requests.get(proxy.url + STUDIES_P1, timeout=10).status_code == 503
    assert requests.get(proxy.url + STUDIES_P1, timeout=10).status_code == 200
    assert len(proxy.requests) == 2
    proxy.clear()
    assert proxy.requests == []


def test_proxy_reports_unreachable_upstream_as_502() -> None:
    with FaultProxy("http://127.0.0.1:9/dicom-web", upstream_timeout=2) as dead:
        reply = requests.get(dead.url + "/studies", timeout=10)
    assert reply.status_code == 502


def test_proxy_stop_returns_promptly_with_hanging_request(
    orthanc: OrthancServer,
) -> None:
    fault_proxy = FaultProxy(orthanc.dicomweb_url).start()
    fault_proxy.set_fault("hang")
    outcome: list[BaseException | int] = []

    def client() -> None:
        try:
            outcome.append(requests.get(fault_proxy.url + STUDIES_P1, timeout=30).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=client, daemon=True)
    worker.start()
    deadline = time.monotonic() + 5
    while not fault_proxy.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fault_proxy.requests, "hanging request never reached the proxy"
    began = time.monotonic()
    fault_proxy.stop()
    assert time.monotonic() - began < 2.0
    worker.join(timeout=5)
    assert outcome and isinstance(outcome[0], requests.exceptions.ConnectionError)
