"""Reading the DICOM JSON model (PS3.18 Annex F) as QIDO-RS and pydicom's to_json_dict() give it.

A dataset is ``{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, ...}``. Values may be absent, empty,
multi-valued, numbers (IS, DS, US, UL) or strings that hold numbers, person names as
``{"Alphabetic": "Family^Given"}`` and sequences as nested datasets. Nothing here raises on odd
input: a reader returns None (or an empty tuple) and the caller decides what to report.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.uid import UID

Dataset = dict[str, Any]

# \Z, not $: Python's $ also matches before a final newline ("1.2\n" is not a UID).
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\Z")


def tag(keyword: str) -> str:
    """The DICOM JSON key of an attribute (``StudyInstanceUID`` -> ``0020000D``), from pydicom's dictionary."""
    found = tag_for_keyword(keyword)
    if found is None:
        raise KeyError(f"{keyword!r} is not a DICOM attribute keyword")
    return f"{found:08X}"


# Attributes read outside the mapping tables (identity, structure, coding): named by keyword, never by number.
STUDY_INSTANCE_UID = tag("StudyInstanceUID")
SERIES_INSTANCE_UID = tag("SeriesInstanceUID")
SOP_INSTANCE_UID = tag("SOPInstanceUID")
MODALITY = tag("Modality")
MODALITIES_IN_STUDY = tag("ModalitiesInStudy")
ACCESSION_NUMBER = tag("AccessionNumber")
STUDY_DATE = tag("StudyDate")
TIMEZONE_OFFSET_FROM_UTC = tag("TimezoneOffsetFromUTC")
SERIES_NUMBER = tag("SeriesNumber")
INSTANCE_NUMBER = tag("InstanceNumber")
NUMBER_OF_STUDY_RELATED_SERIES = tag("NumberOfStudyRelatedSeries")
NUMBER_OF_STUDY_RELATED_INSTANCES = tag("NumberOfStudyRelatedInstances")
NUMBER_OF_SERIES_RELATED_INSTANCES = tag("NumberOfSeriesRelatedInstances")
PATIENT_ID = tag("PatientID")
ISSUER_OF_PATIENT_ID = tag("IssuerOfPatientID")
OTHER_PATIENT_IDS_SEQUENCE = tag("OtherPatientIDsSequence")
PATIENT_NAME = tag("PatientName")
PATIENT_BIRTH_DATE = tag("PatientBirthDate")
PATIENT_SEX = tag("PatientSex")
# Code sequence items (PS3.3 8.8) and issuer sequences (HL7 v2 HD, PS3.3 10.14)
CODE_VALUE = tag("CodeValue")
LONG_CODE_VALUE = tag("LongCodeValue")
URN_CODE_VALUE = tag("URNCodeValue")
CODING_SCHEME_DESIGNATOR = tag("CodingSchemeDesignator")
CODE_MEANING = tag("CodeMeaning")
LOCAL_NAMESPACE_ENTITY_ID = tag("LocalNamespaceEntityID")
UNIVERSAL_ENTITY_ID = tag("UniversalEntityID")
UNIVERSAL_ENTITY_ID_TYPE = tag("UniversalEntityIDType")


def values(dataset: Dataset, tag: str) -> list[Any]:
    """All values of an element, or an empty list when it is absent or empty."""
    element = dataset.get(tag)
    if not element:
        return []
    found = element.get("Value")
    return found if isinstance(found, list) else []


def text(value: Any) -> str | None:
    """A value as trimmed text, None when empty; numbers are kept as their text."""
    if value is None or isinstance(value, (dict, list)):
        return None
    result = str(value).strip()
    return result or None


def first_text(dataset: Dataset, tag: str) -> str | None:
    """The first non-empty value as text. The common case (one string value) is the fast path."""
    element = dataset.get(tag)
    if not element:
        return None
    found = element.get("Value")
    if not found or not isinstance(found, list):
        return None
    head = found[0]
    if type(head) is str or type(head) is UID:  # a UID (pydicom's str) gives the same str() as itself
        head = head.strip()
        if head:
            return head
    for value in found:
        result = text(value)
        if result:
            return result
    return None


def all_text(dataset: Dataset, tag: str) -> list[str]:
    return [t for t in (text(v) for v in values(dataset, tag)) if t]


def is_uid(value: str) -> bool:
    """A valid DICOM UID (PS3.5 9.1): digits and dots, no empty or zero-led component, <= 64."""
    if len(value) > 64 or not value.isascii() or not value.replace(".", "").isdigit():
        return False
    if value[0] == "." or value[-1] == "." or ".." in value:
        return False
    if ".0" in value or (value[0] == "0" and len(value) > 1):
        return UID_PATTERN.match(value) is not None  # rare: only then can a component lead with 0
    return True


def uid(dataset: Dataset, tag: str) -> str | None:
    """A valid DICOM UID or None: the ids we publish must never be garbage."""
    found = first_text(dataset, tag)
    return found if found and is_uid(found) else None


def person_name_text(value: Any) -> str | None:
    """The alphabetic (else ideographic, phonetic) group of a PN value, as DICOM JSON holds it."""
    if isinstance(value, dict):
        for group in ("Alphabetic", "Ideographic", "Phonetic"):
            found = value.get(group)
            if isinstance(found, str) and found.strip("^ =").strip():
                return found
        return None
    if isinstance(value, str) and value.strip("^ =").strip():
        return value
    return None


def person_name_parts(pn: str) -> tuple[str, list[str], str, str]:
    """(family, given names, prefix, suffix) from ``Family^Given^Middle^Prefix^Suffix``."""
    parts = [p.strip() for p in pn.split("=")[0].split("^")] + [""] * 5
    given = [p for p in parts[1:3] if p]
    return parts[0], given, parts[3], parts[4]


@lru_cache(maxsize=8192)
def person_display(pn: str) -> str:
    """A human display such as ``Dr Jane A Smith`` built from a PN value.

    Cached: the same referrers, readers and operators appear on study after study.
    """
    family, given, prefix, suffix = person_name_parts(pn)
    words = [prefix, *given, family, suffix]
    return " ".join(w for w in words if w)


def unsigned(value: Any) -> int | None:
    """An IS/US/UL value as a non-negative int, None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value >= 0 and value == int(value) else None
    found = text(value)
    if found and found.lstrip("+").isdigit():
        return int(found)
    return None


def items(dataset: Dataset, tag: str) -> list[Dataset]:
    """The item datasets of a sequence, skipping anything that is not a dataset."""
    return [v for v in values(dataset, tag) if isinstance(v, dict)]
