"""Builders for DICOM JSON (PS3.18 Annex F) test inputs, written by keyword as a QIDO-RS answer reads.

``dataset(StudyDate="20240305", ReferringPhysicianName="Smith^Jane")`` gives
``{"00080020": {"vr": "DA", "Value": ["20240305"]}, "00080090": {"vr": "PN", "Value": [{"Alphabetic": ...}]}}``.
A list gives several values, ``EMPTY`` an element without a Value, a dict with a ``vr`` key is used
as the element itself (for odd data), and ``None`` leaves the attribute out.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import CTImageStorage

Dataset = dict[str, Any]

EMPTY = object()

STUDY_UID = "1.2.826.0.1.3680043.8.498.10001"
SERIES_UID = f"{STUDY_UID}.1"
INSTANCE_UID = f"{SERIES_UID}.1"
NHS_NUMBER = "9434765919"


def tag(keyword: str) -> str:
    found = tag_for_keyword(keyword)
    if found is None:
        raise KeyError(f"{keyword} is not a DICOM keyword")
    return f"{found:08X}"


def element(vr: str, *values: Any) -> dict[str, Any]:
    """One DICOM JSON element; no values gives an element without ``Value``."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def pn(alphabetic: str) -> dict[str, str]:
    return {"Alphabetic": alphabetic}


def code_item(value: str, scheme: str, meaning: str | None = None) -> Dataset:
    """A code sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning)."""
    return dataset(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def dataset(**attributes: Any) -> Dataset:
    out: Dataset = {}
    for keyword, value in attributes.items():
        if value is None:
            continue
        key = tag(keyword)
        if isinstance(value, dict) and "vr" in value:
            out[key] = value
            continue
        vr = dictionary_VR(key)
        if value is EMPTY:
            out[key] = {"vr": vr}
            continue
        values = value if isinstance(value, list) else [value]
        if vr == "PN":
            values = [pn(v) if isinstance(v, str) else v for v in values]
        out[key] = {"vr": vr, "Value": values}
    return out


def study(**overrides: Any) -> Dataset:
    """A QIDO-RS study result with the attributes a real archive returns; overrides win (None drops)."""
    attributes: dict[str, Any] = {
        "SpecificCharacterSet": "ISO_IR 192",
        "StudyInstanceUID": STUDY_UID,
        "StudyDate": "20240305",
        "StudyTime": "143015",
        "AccessionNumber": "RA12345678",
        "StudyID": "1001",
        "StudyDescription": "CT Chest with contrast",
        "ModalitiesInStudy": ["CT"],
        "ReferringPhysicianName": "Smith^Jane^^Dr",
        "PatientName": "Jones^Robert",
        "PatientID": NHS_NUMBER,
        "IssuerOfPatientID": "NHS",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
        "NumberOfStudyRelatedSeries": 1,
        "NumberOfStudyRelatedInstances": 1,
    }
    attributes.update(overrides)
    return dataset(**attributes)


def series(**overrides: Any) -> Dataset:
    attributes: dict[str, Any] = {
        "StudyInstanceUID": STUDY_UID,
        "SeriesInstanceUID": SERIES_UID,
        "SeriesNumber": 1,
        "Modality": "CT",
        "SeriesDescription": "Axial 1mm",
        "NumberOfSeriesRelatedInstances": 1,
    }
    attributes.update(overrides)
    return dataset(**attributes)


def instance(**overrides: Any) -> Dataset:
    attributes: dict[str, Any] = {
        "StudyInstanceUID": STUDY_UID,
        "SeriesInstanceUID": SERIES_UID,
        "SOPInstanceUID": INSTANCE_UID,
        "SOPClassUID": str(CTImageStorage),
        "InstanceNumber": 1,
    }
    attributes.update(overrides)
    return dataset(**attributes)
