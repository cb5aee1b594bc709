"""The demo's report content: DICOM SR (TID 2000 Basic Diagnostic Imaging Report) with findings and impressions,
in three states that the facade maps to three DiagnosticReport statuses:

    final        CompletionFlag COMPLETE, VerificationFlag VERIFIED, a verifying observer
    preliminary  CompletionFlag PARTIAL, VerificationFlag UNVERIFIED (a draft)
    amended      COMPLETE and VERIFIED, naming the report it replaces (PredecessorDocumentsSequence)

The state is chosen from the StudyInstanceUID (deterministic); `report_state` says which, so tests can expect it.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset

STATES = ("final", "preliminary", "amended")

# (findings, impression) per state: what a cardiologist might write about a transthoracic echo
_TEXT = {
    "final": (
        "Left ventricle normal in size with good systolic function. Estimated LVEF 58%. No significant valve disease.",
        "Structurally normal heart.",
    ),
    "preliminary": (
        "Mildly dilated left ventricle. Estimated LVEF 45%. Mild mitral regurgitation.",
        "Mild left ventricular systolic impairment; formal report to follow.",
    ),
    "amended": (
        "Left ventricle normal in size. Estimated LVEF 55%. Moderate aortic stenosis, peak velocity 3.6 m/s.",
        "Moderate aortic stenosis (amended: severity revised after review).",
    ),
}


def report_state(study_uid: str) -> str:
    """The state of a study's SR report (final, preliminary or amended), from its UID."""
    return STATES[int(study_uid.rsplit(".", 1)[-1]) % len(STATES)]


def report_text(study_uid: str) -> tuple[str, str]:
    """(findings, impression) of a study's SR report."""
    return _TEXT[report_state(study_uid)]


def tid2000_content(
    ds: Dataset,
    study_uid: str,
    reader: str,
    predecessor_uid: str,
    code: Callable[[str, str, str], Dataset],
    text_item: Callable[[str, str, str, str], Dataset],
) -> None:
    """Fill a Comprehensive SR's document: title, flags, observer, Findings and Impressions sections."""
    state = report_state(study_uid)
    findings, impression = _TEXT[state]
    ds.ConceptNameCodeSequence = [code("18748-4", "LN", "Diagnostic imaging report")]
    ds.CompletionFlag = "PARTIAL" if state == "preliminary" else "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED" if state == "preliminary" else "VERIFIED"
    if state != "preliminary":
        observer = Dataset()
        observer.VerifyingObserverName = reader
        observer.VerifyingObserverIdentificationCodeSequence = []
        observer.VerifyingOrganization = "Cardiology"
        observer.VerificationDateTime = "20240101120000"
        ds.VerifyingObserverSequence = [observer]
    if state == "amended":
        ref = Dataset()
        ref.StudyInstanceUID = study_uid
        series = Dataset()
        series.SeriesInstanceUID = predecessor_uid.rsplit(".", 1)[0] + ".1"
        sop = Dataset()
        sop.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
        sop.ReferencedSOPInstanceUID = predecessor_uid
        series.ReferencedSOPSequence = [sop]
        ref.ReferencedSeriesSequence = [series]
        ds.PredecessorDocumentsSequence = [ref]
    ds.PerformedProcedureCodeSequence = []
    observer_item = Dataset()
    observer_item.RelationshipType = "HAS OBS CONTEXT"
    observer_item.ValueType = "PNAME"
    observer_item.ConceptNameCodeSequence = [code("121008", "DCM", "Person Observer Name")]
    observer_item.PersonName = reader
    sections = []
    for section_code, section, item_code, item, value in (
        ("121070", "Findings", "121071", "Finding", findings),
        ("121072", "Impressions", "121073", "Impression", impression),
    ):
        container = Dataset()
        container.RelationshipType = "CONTAINS"
        container.ValueType = "CONTAINER"
        container.ContinuityOfContent = "SEPARATE"
        container.ConceptNameCodeSequence = [code(section_code, "DCM", section)]
        container.ContentSequence = [text_item(item_code, "DCM", item, value)]
        sections.append(container)
    ds.ContentSequence = [observer_item, *sections]


# --------------------------------------------------------------------------- encapsulated PDF reports

# Per study template: (author role, findings, conclusion) of the one-page PDF report an encapsulated PDF (DOC)
# series holds. The specialties are those whose systems write PDF reports into PACS: endoscopy, cardiology
# (cath lab), orthopaedics, nuclear medicine and cellular pathology.
PDF_REPORTS: dict[str, tuple[str, str, str]] = {
    "colonoscopy": (
        "Endoscopist",
        "Procedure completed to caecum. Two small polyps removed.",
        "Two diminutive polyps removed; histology to follow.",
    ),
    "cath": (
        "Interventional cardiologist",
        "Left main normal. 70% stenosis of the proximal LAD. Right coronary artery dominant, unobstructed.",
        "Single-vessel coronary artery disease; for discussion at the heart team meeting.",
    ),
    "dx_hip": (
        "Orthopaedic surgeon",
        "Joint space narrowing superiorly with subchondral sclerosis and osteophytes. No fracture.",
        "Moderate osteoarthritis of the hip; templated for total hip replacement.",
    ),
    "nm_bone": (
        "Nuclear medicine physician",
        "Physiological tracer distribution. No focal abnormal uptake in the axial or appendicular skeleton.",
        "No scintigraphic evidence of skeletal metastases.",
    ),
    "wsi": (
        "Consultant histopathologist",
        "Sections show a core of fibrofatty tissue with benign glandular elements. No atypia or malignancy.",
        "Benign tissue. No evidence of malignancy.",
    ),
}


def pdf_report_title(description: str) -> str:
    """The DocumentTitle of a study's PDF report."""
    return f"{description} report"


def pdf_report_lines(
    template_key: str,
    *,
    trust_name: str,
    description: str,
    date: str,
    accession: str,
    indication: str,
    author: str,
) -> list[str]:
    """The readable lines of a study's one-page PDF report."""
    role, findings, conclusion = PDF_REPORTS[template_key]
    return [
        trust_name,
        pdf_report_title(description),
        f"Date: {date}   Accession: {accession or '-'}",
        f"Indication: {indication}",
        f"Findings: {findings}",
        f"Conclusion: {conclusion}",
        f"{role}: {author}",
    ]
