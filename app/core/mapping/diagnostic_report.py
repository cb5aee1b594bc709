"""DiagnosticReport from a DICOM report object (SR, TID 2000; or an encapsulated PDF), read from the object's
WADO-RS metadata (DICOM JSON) and the ImagingStudy of the trust's copy of its study. Pure; the tables are
mappings/diagnosticreport.yaml.

    id                  `<ODS>-<SOPInstanceUID>` (as DocumentReference ids: app/core/mapping/document_reference.py)
    identifier          urn:dicom:uid of the SOPInstanceUID
    basedOn             the study's accession (ACSN identifier)
    status              SR: final when CompletionFlag COMPLETE and VerificationFlag VERIFIED, amended when it names
                        a PredecessorDocumentsSequence, preliminary otherwise; PDF: final (no flags to say otherwise)
    category            v2-0074 RAD (Radiology), and the study's modalities (DCM)
    code                the study's coded procedure; else the SR's concept name (LOINC); else LOINC 18748-4
    subject             the study's subject (the Patient by NHS number)
    effectiveDateTime   the study's started
    issued              ContentDate + ContentTime, when a full instant
    performer           the holding trust (ODS code)
    resultsInterpreter  the SR's verifying observers and Person Observer Names (display only)
    imagingStudy        ImagingStudy/<StudyInstanceUID>
    conclusion          the SR's impression text(s)
    presentedForm       SR: the whole report as text/plain; PDF: application/pdf at the gateway's report route

A report that cannot be read (an SR with no text, a PDF without its document) is not guessed at: the builder
returns None with an issue saying why.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from app.core import dicom_json as dj
from app.core import systems
from app.core.mapping.context import TrustMapping
from app.core.mapping.dates import DateProblem, fhir_datetime
from app.core.mapping.document_reference import DEFAULT_TYPE, accession_identifiers, document_id

TABLE = Path(__file__).resolve().parents[3] / "mappings" / "diagnosticreport.yaml"
RADIOLOGY = {"system": systems.DIAGNOSTIC_SERVICE_SECTION, "code": "RAD", "display": "Radiology"}
_INSTANT_LENGTH = 25  # YYYY-MM-DDThh:mm:ss+hh:mm
_SCHEMES = {"LN": systems.LOINC, "SCT": systems.SNOMED, "DCM": systems.DCM}

SOP_CLASS_UID = dj.tag("SOPClassUID")
CONCEPT_NAME = dj.tag("ConceptNameCodeSequence")
CONTENT_SEQUENCE = dj.tag("ContentSequence")
VALUE_TYPE = dj.tag("ValueType")
TEXT_VALUE = dj.tag("TextValue")
PERSON_NAME = dj.tag("PersonName")
COMPLETION_FLAG = dj.tag("CompletionFlag")
VERIFICATION_FLAG = dj.tag("VerificationFlag")
PREDECESSORS = dj.tag("PredecessorDocumentsSequence")
REFERENCED_SERIES = dj.tag("ReferencedSeriesSequence")
REFERENCED_SOPS = dj.tag("ReferencedSOPSequence")
REFERENCED_SOP_INSTANCE_UID = dj.tag("ReferencedSOPInstanceUID")
VERIFYING_OBSERVERS = dj.tag("VerifyingObserverSequence")
VERIFYING_OBSERVER_NAME = dj.tag("VerifyingObserverName")
CONTENT_DATE = dj.tag("ContentDate")
CONTENT_TIME = dj.tag("ContentTime")
TIMEZONE = dj.tag("TimezoneOffsetFromUTC")
DOCUMENT_TITLE = dj.tag("DocumentTitle")
MIME_TYPE = dj.tag("MIMETypeOfEncapsulatedDocument")


@dataclass(frozen=True)
class ReportTables:
    sr_classes: dict[str, str]
    pdf_classes: dict[str, str]
    findings: frozenset[tuple[str, str]]
    impressions: frozenset[tuple[str, str]]
    observer_names: frozenset[tuple[str, str]]

    def is_report(self, sop_class: str | None) -> bool:
        return sop_class in self.sr_classes or sop_class in self.pdf_classes


@lru_cache(maxsize=1)
def tables() -> ReportTables:
    table = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    concepts = table["concepts"]
    return ReportTables(
        sr_classes=dict(table["sop_classes"]["sr"]),
        pdf_classes=dict(table["sop_classes"]["pdf"]),
        findings=frozenset((s, c) for s, c in concepts["findings"]),
        impressions=frozenset((s, c) for s, c in concepts["impressions"]),
        observer_names=frozenset((s, c) for s, c in concepts["observer_name"]),
    )


def report_id(ods_code: str, sop_uid: str) -> str:
    return document_id(ods_code, sop_uid)


def _concept(item: dj.Dataset) -> tuple[str, str, str] | None:
    code = next(iter(dj.items(item, CONCEPT_NAME)), None)
    if code is None:
        return None
    return (
        dj.first_text(code, dj.CODING_SCHEME_DESIGNATOR) or "",
        dj.first_text(code, dj.CODE_VALUE) or "",
        dj.first_text(code, dj.CODE_MEANING) or "",
    )


@dataclass
class _Content:
    findings: list[str]
    impressions: list[str]
    observers: list[str]
    lines: list[str]


def _walk(items: list[dj.Dataset], found: _Content, heading: tuple[str, str] | None, depth: int) -> None:
    t = tables()
    for item in items:
        concept = _concept(item)
        key = (concept[0], concept[1]) if concept else None
        meaning = concept[2] if concept else ""
        kind = dj.first_text(item, VALUE_TYPE)
        if kind == "TEXT":
            value = dj.first_text(item, TEXT_VALUE)
            if value:
                found.lines.append(f"{'  ' * depth}{meaning}: {value}" if meaning else f"{'  ' * depth}{value}")
                role = key if key in t.findings or key in t.impressions else heading
                if role in t.impressions:
                    found.impressions.append(value)
                elif role in t.findings:
                    found.findings.append(value)
        elif kind == "PNAME" and key in t.observer_names:
            name = next((dj.person_name_text(v) for v in dj.values(item, PERSON_NAME)), None)
            if name:
                found.observers.append(dj.person_display(name))
        elif kind == "CONTAINER":
            if meaning:
                found.lines.append(f"{'  ' * depth}{meaning}")
            _walk(dj.items(item, CONTENT_SEQUENCE), found, key or heading, depth + 1)


def _status(instance: dj.Dataset) -> str:
    if dj.items(instance, PREDECESSORS):
        return "amended"
    complete = dj.first_text(instance, COMPLETION_FLAG) == "COMPLETE"
    verified = dj.first_text(instance, VERIFICATION_FLAG) == "VERIFIED"
    return "final" if complete and verified else "preliminary"


def _coding(concept: tuple[str, str, str] | None) -> dict[str, Any] | None:
    if concept is None or concept[0] not in _SCHEMES or not concept[1]:
        return None
    coding = {"system": _SCHEMES[concept[0]], "code": concept[1]}
    return {**coding, "display": concept[2]} if concept[2] else coding


@dataclass(frozen=True)
class Built:
    report: dict[str, Any] | None
    problem: str | None = None
    replaces: tuple[str, ...] = ()  # SOPInstanceUIDs of the documents an amended SR names as its predecessors


def predecessor_uids(instance: dj.Dataset) -> tuple[str, ...]:
    """The SOPInstanceUIDs an SR's PredecessorDocumentsSequence names (study > series > SOP), valid UIDs only."""
    found = [
        uid
        for study in dj.items(instance, PREDECESSORS)
        for series in dj.items(study, REFERENCED_SERIES)
        for sop in dj.items(series, REFERENCED_SOPS)
        if (uid := dj.first_text(sop, REFERENCED_SOP_INSTANCE_UID)) and dj.is_uid(uid)
    ]
    return tuple(dict.fromkeys(found))


def build_report(
    instance: dj.Dataset,
    study: dict[str, Any],
    trust: TrustMapping,
    zone: tzinfo,
    *,
    pdf_url: str,
) -> Built:
    """The DiagnosticReport of one report object of `study` (the ImagingStudy of the trust's copy)."""
    t = tables()
    sop_uid = dj.first_text(instance, dj.SOP_INSTANCE_UID) or ""
    sop_class = dj.first_text(instance, SOP_CLASS_UID)
    if not dj.is_uid(sop_uid) or not t.is_report(sop_class):
        return Built(None, f"{trust.id} study {study['id']}: an object is not a report this server reads")
    where = f"{trust.id} report {sop_uid}"
    accessions = accession_identifiers(study)
    procedure = next((c for c in study.get("procedureCode", ()) if c.get("coding")), None)
    concept = _concept(instance)
    code = procedure or ({"coding": [c]} if (c := _coding(concept)) else {"coding": [DEFAULT_TYPE]})
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report_id(trust.ods_code, sop_uid),
        "identifier": [{"system": systems.DICOM_UID, "value": f"{systems.OID_PREFIX}{sop_uid}"}],
    }
    if accessions:
        report["basedOn"] = [{"identifier": a} for a in accessions]
    category = [{"coding": [RADIOLOGY]}]
    if study.get("modality"):
        category.append({"coding": list(study["modality"])})
    report.update({"status": "final", "category": category, "code": code, "subject": study["subject"]})
    if study.get("started"):
        report["effectiveDateTime"] = study["started"]
    try:
        issued = fhir_datetime(
            dj.first_text(instance, CONTENT_DATE),
            dj.first_text(instance, CONTENT_TIME),
            dj.first_text(instance, TIMEZONE),
            zone,
        )
    except DateProblem:
        issued = None
    if issued and len(issued) >= _INSTANT_LENGTH and issued[10] == "T" and issued.count(":") >= 3:
        report["issued"] = issued
    report["performer"] = [trust.organization_reference]
    report["imagingStudy"] = [{"reference": f"ImagingStudy/{study['id']}"}]
    if sop_class in t.pdf_classes:
        mime = dj.first_text(instance, MIME_TYPE)
        if mime is not None and mime != "application/pdf":
            return Built(None, f"{where}: the encapsulated document is {mime}, not a PDF")
        title = dj.first_text(instance, DOCUMENT_TITLE) or (concept[2] if concept else None) or "Imaging report"
        report["presentedForm"] = [{"contentType": "application/pdf", "url": pdf_url, "title": title}]
        return Built(report)
    found = _Content([], [], [], [])
    _walk(dj.items(instance, CONTENT_SEQUENCE), found, None, 0)
    if not found.lines or not (found.findings or found.impressions):
        return Built(None, f"{where}: the structured report has no findings or impressions this server can read")
    report["status"] = _status(instance)
    observers = [
        dj.person_display(n)
        for o in dj.items(instance, VERIFYING_OBSERVERS)
        for n in (dj.person_name_text(v) for v in dj.values(o, VERIFYING_OBSERVER_NAME))
        if n
    ]
    names = list(dict.fromkeys([*observers, *found.observers]))
    if names:
        report["resultsInterpreter"] = [{"display": n} for n in names]
    if found.impressions:
        report["conclusion"] = "\n".join(found.impressions)
    title = (concept[2] if concept else None) or "Imaging report"
    text = "\n".join([title, *found.lines]) + "\n"
    report["presentedForm"] = [
        {
            "contentType": "text/plain; charset=utf-8",
            "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
            "title": title,
        }
    ]
    # reorder to keep a stable, readable element order
    order = [
        "resourceType",
        "id",
        "identifier",
        "basedOn",
        "status",
        "category",
        "code",
        "subject",
        "effectiveDateTime",
        "issued",
        "performer",
        "resultsInterpreter",
        "imagingStudy",
        "conclusion",
        "presentedForm",
    ]
    return Built({k: report[k] for k in order if k in report}, replaces=predecessor_uids(instance))
