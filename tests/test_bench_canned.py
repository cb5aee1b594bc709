"""The canned archive of bench/ answers in the shapes Orthanc gives, and the facade's own QIDO-RS adapter
reads it: studies and series of the bench patient, paged with limit/offset, counted.

Only the shapes and counts are checked; never a timing.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import requests

from app.archives.dicomweb.qido import DicomWebArchive
from app.core.query import PatientKey, StudyQuery
from bench.facade_cpu import CannedArchives

pytestmark = pytest.mark.integration

TAG = re.compile(r"^[0-9A-F]{8}$")


@pytest.fixture(scope="module")
def canned():
    archives = CannedArchives(2, 13, 0.0, 0.0)
    yield archives
    archives.stop()


def _dicom_json(datasets: list) -> None:
    for dataset in datasets:
        assert list(dataset) == sorted(dataset), "tags in ascending order, as Orthanc sends them"
        for tag, element in dataset.items():
            assert TAG.match(tag), tag
            assert set(element) <= {"vr", "Value"} and re.match(r"^[A-Z]{2}$", element["vr"]), element
            if element["vr"] == "PN":
                assert all(set(v) == {"Alphabetic"} for v in element["Value"])


def test_studies_and_series_of_the_patient_in_orthancs_shape(canned) -> None:
    url = canned.urls[0]
    query = f"PatientID={canned.patient}&IssuerOfPatientID=NHS&includefield=all"
    studies = requests.get(f"{url}/studies?{query}", timeout=5)
    series = requests.get(f"{url}/series?{query}", timeout=5)
    assert studies.headers["Content-Type"] == series.headers["Content-Type"] == "application/dicom+json"
    _dicom_json(studies.json())
    _dicom_json(series.json())
    assert len(studies.json()) == 13
    per_study = Counter(s["0020000D"]["Value"][0] for s in series.json())
    assert set(per_study.values()) <= {1, 2, 3}
    for study in studies.json():
        uid = study["0020000D"]["Value"][0]
        assert study["00100020"]["Value"] == [canned.patient]
        assert study["00201206"]["Value"] == [per_study[uid]], "NumberOfStudyRelatedSeries counts its series"


def test_limit_offset_other_patients_and_the_probe(canned) -> None:
    url = canned.urls[1]
    key = f"PatientID={canned.patient}&IssuerOfPatientID=NHS"
    every = requests.get(f"{url}/studies?{key}", timeout=5).json()
    page = requests.get(f"{url}/studies?{key}&limit=5&offset=10", timeout=5).json()
    assert page == every[10:13]
    assert requests.get(f"{url}/studies?PatientID=9990000018&IssuerOfPatientID=NHS", timeout=5).json() == []
    assert requests.get(f"{url}/studies?{key}&IssuerOfPatientID=OTHER", timeout=5).json() == []
    assert requests.get(f"{url}/studies?StudyInstanceUID=2.25.0&limit=1", timeout=5).json() == []


def test_the_facades_adapter_pages_through_it_and_the_archive_counts(canned) -> None:
    port = canned.ports[0]
    requests.post(f"http://127.0.0.1:{port}/_reset", timeout=5)
    archive = DicomWebArchive("bolton", canned.urls[0], timeout_s=5, page_size=5)
    query = StudyQuery(patient=PatientKey(canned.patient, "NHS"))
    studies = archive.find_studies(query)
    series = archive.find_series(query)
    assert len(studies.datasets) == 13 and studies.incomplete is None
    assert {s["0020000D"]["Value"][0] for s in series.datasets} == {s["0020000D"]["Value"][0] for s in studies.datasets}
    pages = requests.get(f"http://127.0.0.1:{port}/_count", timeout=5).json()
    assert pages["studies"] == 3  # 5 + 5 + 3
    assert pages["series"] == archive.requests_made - 3
    archive.close()
