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
