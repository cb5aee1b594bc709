"""Patient identity: NHS numbers, how each trust's archive carries them, and the Patient resource.

The NHS number is the Patient's logical id, as in NHS England's PDS FHIR API. An archive may hold
it as PatientID (with IssuerOfPatientID), only inside OtherPatientIDsSequence, or not at all (a
local MRN that the cross-reference resolves).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

from app.core import dicom_json as dj
from app.core import systems
from app.core.identity import is_nhs_number
from app.core.mapping.dates import DateProblem, fhir_date

_GENDER = {"M": "male", "F": "female", "O": "other"}


def local_patient_key(study: dj.Dataset) -> tuple[str, str] | None:
    """(PatientID, IssuerOfPatientID) as the archive holds them."""
    pid = dj.first_text(study, dj.PATIENT_ID)
    return (pid, dj.first_text(study, dj.ISSUER_OF_PATIENT_ID) or "") if pid else None


class NhsNumberLookup(Protocol):
    """(trust id, local PatientID, issuer) -> NHS number: the cross-reference's reverse direction."""

    def get(self, key: tuple[str, str, str], /) -> str | None: ...


def nhs_number_of(
    study: dj.Dataset, match: str, issuer: str | None, trust_id: str, xref: NhsNumberLookup
) -> str | None:
    """The NHS number a study belongs to, by the trust's rule; None when it cannot be told.

    `xref` maps (trust id, local PatientID, issuer) to NHS number; a row without an issuer matches
    the local id whatever issuer the archive holds, a row with one only that issuer. An NHS number
    is only ever accepted when it passes its check digit: a wrong digit must not attach images to
    someone else.
    """
    pid = dj.first_text(study, dj.PATIENT_ID)
    held_issuer = dj.first_text(study, dj.ISSUER_OF_PATIENT_ID)
    claims: set[str] = set()
    if match == "patient_id":
        if pid and is_nhs_number(pid) and (held_issuer in (None, issuer)):
            claims.add(pid)
    elif pid and (found := xref.get((trust_id, pid, held_issuer or "")) or xref.get((trust_id, pid, ""))):
        claims.add(found)
    for item in dj.items(study, dj.OTHER_PATIENT_IDS_SEQUENCE):
        other = dj.first_text(item, dj.PATIENT_ID)
        if other and dj.first_text(item, dj.ISSUER_OF_PATIENT_ID) == "NHS" and is_nhs_number(other):
            claims.add(other)
    # A record that names two NHS numbers belongs to nobody until someone fixes it.
    return claims.pop() if len(claims) == 1 else None


def subject_reference(nhs_number: str | None, study: dj.Dataset, local_system: str) -> dict[str, Any]:
    """ImagingStudy.subject: the Patient by NHS number, else the trust-local identifier only."""
    item = study.get(dj.PATIENT_NAME)
    names = item.get("Value") if item else None
    if type(names) is list and len(names) == 1:  # the common case: one name
        name = dj.person_name_text(names[0])
    else:
        name = next((n for n in (dj.person_name_text(v) for v in dj.values(study, dj.PATIENT_NAME)) if n), None)
    if nhs_number:
        ref: dict[str, Any] = {
            "reference": f"Patient/{nhs_number}",
            "identifier": {"system": systems.NHS_NUMBER, "value": nhs_number},
        }
    else:
        pid = dj.first_text(study, dj.PATIENT_ID) or "unknown"
        ref = {"identifier": {"system": local_system, "value": pid}}
    if name:
        ref["display"] = dj.person_display(name)
    return ref


def subject_number(study: dict[str, Any]) -> str | None:
    """The NHS number an ImagingStudy's subject names (None: a trust-local identifier only)."""
    reference = str(study.get("subject", {}).get("reference", ""))
    return reference.removeprefix("Patient/") if reference.startswith("Patient/") else None


def _human_name(pn: str) -> dict[str, Any]:
    family, given, prefix, suffix = dj.person_name_parts(pn)
    name: dict[str, Any] = {"use": "official", "text": dj.person_display(pn)}
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


def _most_common(found: Iterable[str]) -> str | None:
    counts = Counter(found)
    return min(counts, key=lambda v: (-counts[v], v)) if counts else None


def patient_resource(nhs_number: str, studies: Iterable[dj.Dataset]) -> dict[str, Any]:
    """A minimal Patient from imaging records: NHS number, name, sex, birth date.

    Where archives disagree the most frequent value wins (ties: the smallest), so the answer is
    deterministic; disagreements are reported by the federation layer.
    """
    names: list[str] = []
    births: list[str] = []
    sexes: list[str] = []
    for study in studies:
        names.extend(n for n in (dj.person_name_text(v) for v in dj.values(study, dj.PATIENT_NAME)) if n)
        birth = dj.first_text(study, dj.PATIENT_BIRTH_DATE)
        if birth:
            with contextlib.suppress(DateProblem):  # an unreadable birth date is simply not used
                births.append(fhir_date(birth))
        sex = dj.first_text(study, dj.PATIENT_SEX)
        if sex:
            sexes.append(sex.upper())
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": nhs_number,
        "identifier": [{"system": systems.NHS_NUMBER, "value": nhs_number}],
    }
    name = _most_common(names)
    if name:
        patient["name"] = [_human_name(name)]
    sex = _most_common(sexes)
    patient["gender"] = _GENDER.get(sex or "", "unknown")
    birth = _most_common(b for b in births if len(b) == 10)
    if birth:
        patient["birthDate"] = birth
    return patient
