"""DocumentReference (IHE MHD DocumentEntry, as NHS England's imaging specification shapes it) for a study held
by one trust, built from the mapped ImagingStudy copy that trust's archive answered. Pure.

One DocumentReference per study and holding trust: its id is derived from the holding trust's ODS code and the
StudyInstanceUID (`<ODS>-<uid>`; a UID too long for a 64-character id is packed, reversibly), so the same study
always has the same id. Elements, and where each comes from:

    masterIdentifier        urn:uuid, a name-based (v5) UUID of the ODS code and the UID: unique per entry
    identifier              the study's urn:dicom:uid identifier and its accession (ACSN) identifier(s)
    status                  current
    type                    the study's procedure code; else LOINC 18748-4 (Diagnostic imaging study)
    category                SNOMED CT 363679005 (Imaging)
    subject                 the study's subject (the Patient by NHS number)
    date                    the study's date and time, when it is a full instant
    custodian               the holding trust, by ODS code
    description             the study description
    securityLabel           v3-Confidentiality N (normal)
    content[0]              the study's WADO-RS metadata at the gateway (application/dicom+json), format the
                            XDS-I.b format code of a study manifest: the DICOM KOS SOP Class UID (DCMUID system)
    content[1]              the trust's IHE IID viewer URL (text/html), when the trust configures a viewer
    context.period          the study's started
    context.related         the accession number (ACSN identifier)
    context.sourcePatientInfo  the patient's local identifier at the trust (PatientID, its issuer's system)

A report object's entry (report_document) is built from its DiagnosticReport; an amended SR's entry has a
`relatesTo` `replaces` per predecessor its PredecessorDocumentsSequence names (docs/imaging-documents-and-reports.md).
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote

from app.core import dicom_json as dj
from app.core import systems
from app.core.mapping.context import TrustMapping

STATUS = "current"
CATEGORY = {"system": systems.SNOMED, "code": "363679005", "display": "Imaging"}
DEFAULT_TYPE = {"system": systems.LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
FORMATS = {  # IHE format codes (IHE RAD XDS-I.b: a study manifest is a DICOM KOS, its SOP Class UID); none invented
    "study": {
        "system": systems.DCM_UID,
        "code": "1.2.840.10008.5.1.4.1.1.88.59",
        "display": "Key Object Selection Document",
    },
    "pdf": {"system": systems.IHE_FORMAT_CODE, "code": "urn:ihe:rad:PDF"},
    "text": {"system": systems.IHE_FORMAT_CODE, "code": "urn:ihe:rad:TEXT"},
}
SECURITY_LABEL = {"system": systems.CONFIDENTIALITY, "code": "N", "display": "normal"}
DICOM_JSON = "application/dicom+json"
_ODS = re.compile(r"^[A-Z0-9]{3,8}\Z")
_PACKED = re.compile(r"^z[0-9a-z]{1,60}\Z")
_MAX_ID = 64
_INSTANT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})\Z")
_NAMESPACE = uuid.UUID("8a6b1f52-3c0e-5d7a-9b1e-3f0c2a5d4e61")  # this facade's DocumentReference names


def _pack(uid: str) -> str:
    """A UID (digits and dots) as a shorter base-36 string: the digits of a base-11 number led by a 1."""
    number = 1
    for ch in uid:
        number = number * 11 + (10 if ch == "." else int(ch))
    digits = ""
    while number:
        number, rest = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[rest] + digits
    return "z" + digits


def _unpack(packed: str) -> str | None:
    number = int(packed[1:], 36)
    out = ""
    while number > 1:
        number, rest = divmod(number, 11)
        out = ("." if rest == 10 else str(rest)) + out
    return out if number == 1 else None


def document_id(ods_code: str, uid: str) -> str:
    """The DocumentReference id of a study (or report object) `uid` held by the trust `ods_code`."""
    plain = f"{ods_code}-{uid}"
    return plain if len(plain) <= _MAX_ID else f"{ods_code}-{_pack(uid)}"


def parse_document_id(value: str) -> tuple[str, str] | None:
    """(ODS code, UID) of a DocumentReference id of this server, or None."""
    ods, sep, rest = value.partition("-")
    if not sep or not _ODS.match(ods) or len(value) > _MAX_ID:
        return None
    uid = _unpack(rest) if _PACKED.match(rest) else rest
    if uid is None or not dj.is_uid(uid):
        return None
    return (ods, uid) if document_id(ods, uid) == value else None  # one id per entry: no second spelling


def fill_viewer(template: str, study_uid: str, accession: str | None, nhs_number: str | None) -> str:
    """An RFC 6570 level-1 expansion of a trust's viewer URL template (settings check its variables)."""
    values = {"studyUID": study_uid, "accessionNumber": accession or "", "patientID": nhs_number or ""}
    return re.sub(r"\{(\w+)\}", lambda m: quote(values.get(m.group(1), ""), safe=""), template)


def accession_identifiers(study: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in study.get("identifier", ()) if i.get("type", {}).get("coding", [{}])[0].get("code") == "ACSN"]


def study_document(
    study: dict[str, Any],
    trust: TrustMapping,
    *,
    metadata_url: str,
    viewer_url: str | None,
    local_patient: dict[str, str] | None,
) -> dict[str, Any]:
    """The DocumentReference of one trust's copy of a study (`study`: the ImagingStudy mapped from its answer)."""
    uid = study["id"]
    accessions = accession_identifiers(study)
    uid_identifiers = [i for i in study.get("identifier", ()) if i.get("system") == systems.DICOM_UID]
    procedure = (study.get("procedureCode") or [None])[0]
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": document_id(trust.ods_code, uid),
        "masterIdentifier": {
            "system": systems.URI,
            "value": f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{trust.ods_code}|{uid}')}",
        },
        "identifier": [*uid_identifiers, *accessions],
        "status": STATUS,
        "type": procedure or {"coding": [DEFAULT_TYPE]},
        "category": [{"coding": [CATEGORY]}],
        "subject": study["subject"],
    }
    started = study.get("started")
    if started and _INSTANT.match(started):
        document["date"] = started
    document["custodian"] = trust.organization_reference
    if study.get("description"):
        document["description"] = study["description"]
    document["securityLabel"] = [{"coding": [SECURITY_LABEL]}]
    title = study.get("description") or "Imaging study"
    content = [
        {
            "attachment": {"contentType": DICOM_JSON, "url": metadata_url, "title": f"{title} (DICOM metadata)"},
            "format": FORMATS["study"],
        }
    ]
    if viewer_url:
        content.append({"attachment": {"contentType": "text/html", "url": viewer_url, "title": f"{title} (viewer)"}})
    document["content"] = content
    context: dict[str, Any] = {}
    if started:
        context["period"] = {"start": started}
    if accessions:
        context["related"] = [{"identifier": a} for a in accessions]
    if local_patient:
        context["sourcePatientInfo"] = {"identifier": local_patient}
    if context:
        document["context"] = context
    return document


_DOC_STATUS = {"final": "final", "preliminary": "preliminary", "amended": "amended"}


def report_document(
    report: dict[str, Any], trust: TrustMapping, study: dict[str, Any], *, replaces: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The DocumentReference of a report object, from its DiagnosticReport (app/core/mapping/diagnostic_report.py)
    and the study it reports on: an SR's text inline (`urn:ihe:rad:TEXT`), a PDF by the gateway's report route
    (`urn:ihe:rad:PDF`). `replaces`: the SOPInstanceUIDs of the documents an amended SR names as predecessors, each
    a `relatesTo` (code `replaces`) whose target is the DocumentReference the predecessor has at the same trust
    (its id is derived as every report entry's), with the predecessor's UID as the target's identifier."""
    sop = report["identifier"][0]["value"].removeprefix(systems.OID_PREFIX)
    form = report["presentedForm"][0]
    is_pdf = form["contentType"] == "application/pdf"
    attachment = {k: form[k] for k in ("contentType", "url", "data", "title") if k in form}
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": document_id(trust.ods_code, sop),
        "masterIdentifier": {
            "system": systems.URI,
            "value": f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{trust.ods_code}|{sop}')}",
        },
        "identifier": [*report["identifier"], *accession_identifiers(study)],
        "status": STATUS,
    }
    if report["status"] in _DOC_STATUS:
        document["docStatus"] = _DOC_STATUS[report["status"]]
    document.update(
        {
            "type": report["code"],
            "category": [{"coding": [CATEGORY]}],
            "subject": report["subject"],
        }
    )
    if "issued" in report:
        document["date"] = report["issued"]
    if report.get("resultsInterpreter"):
        document["author"] = report["resultsInterpreter"]
    document["custodian"] = trust.organization_reference
    if replaces:
        document["relatesTo"] = [
            {
                "code": "replaces",
                "target": {
                    "reference": f"DocumentReference/{document_id(trust.ods_code, uid)}",
                    "identifier": {"system": systems.DICOM_UID, "value": f"{systems.OID_PREFIX}{uid}"},
                },
            }
            for uid in replaces
        ]
    document["description"] = form.get("title") or "Imaging report"
    document["securityLabel"] = [{"coding": [SECURITY_LABEL]}]
    document["content"] = [{"attachment": attachment, "format": FORMATS["pdf" if is_pdf else "text"]}]
    context: dict[str, Any] = {}
    if study.get("started"):
        context["period"] = {"start": study["started"]}
    context["related"] = [
        *({"identifier": a} for a in accession_identifiers(study)),
        {"reference": f"ImagingStudy/{study['id']}"},
    ]
    document["context"] = context
    return document
