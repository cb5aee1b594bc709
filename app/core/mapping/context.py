"""What a mapping needs besides the DICOM data: the trust, the terminology and a place to report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from app.core import systems


@dataclass(frozen=True)
class TrustMapping:
    """The per-trust facts the mapping writes into resources (built once per trust)."""

    id: str
    ods_code: str
    name: str
    accession_system: str
    zone: tzinfo
    endpoint_id: str
    # ODS code -> (accession system, Organization reference) of every trust, for accessions that a
    # study copied from another trust still carries with that trust's issuer.
    issuers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict, compare=False, repr=False)
    viewer_endpoint_id: str | None = None  # the trust's ihe-iid Endpoint, when it has a viewer
    # Built once and shared by every resource of the trust: the API never mutates emitted dicts.
    endpoint_reference: dict[str, str] = field(init=False, repr=False, compare=False)
    study_endpoints: list[dict[str, str]] = field(init=False, repr=False, compare=False)
    organization_reference: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint_reference", {"reference": f"Endpoint/{self.endpoint_id}"})
        viewer = [{"reference": f"Endpoint/{self.viewer_endpoint_id}"}] if self.viewer_endpoint_id else []
        object.__setattr__(self, "study_endpoints", [self.endpoint_reference, *viewer])
        object.__setattr__(
            self,
            "organization_reference",
            {
                "reference": f"Organization/{self.ods_code}",
                "identifier": {"system": systems.ODS_ORGANIZATION_CODE, "value": self.ods_code},
                "display": self.name,
            },
        )


@dataclass(frozen=True)
class Terminology:
    """Code tables from mappings/terminology, each named with its source edition."""

    body_sites: dict[str, dict[str, str]]
    laterality: dict[str, dict[str, str]]
    modalities: dict[str, dict[str, str]]
    sop_classes: dict[str, str]
    coding_schemes: dict[str, str]
    keywords: dict[str, str] = field(default_factory=dict)
    editions: dict[str, str] = field(default_factory=dict)


class MappingContext:
    """Per-study state of one mapping: the trust, the subject and the issues found so far."""

    __slots__ = ("issues", "study_offset", "study_uid", "subject", "terminology", "trust")

    def __init__(
        self,
        trust: TrustMapping,
        terminology: Terminology,
        subject: dict[str, Any],
        study_uid: str,
        issues: list[dict[str, Any]],
    ) -> None:
        self.trust = trust
        self.terminology = terminology
        self.subject = subject
        self.study_uid = study_uid
        self.issues = issues
        self.study_offset: str | None = None

    def keyword(self, tag: str) -> str:
        return self.terminology.keywords.get(tag, tag)

    def report(self, element: str, message: str, severity: str = "warning") -> None:
        """Record data that could not be mapped; it becomes an OperationOutcome issue."""
        self.issues.append(
            {
                "severity": severity,
                "code": "value",
                "diagnostics": f"{self.trust.id} study {self.study_uid}: {message}",
                "expression": [element],
            }
        )
