"""The CapabilityStatement: exactly what this server supports, built from the same tables the views use."""

from __future__ import annotations

from typing import Any

from app.core.instants import utc_instant

FHIR_VERSION = "4.0.1"
_DOCS = "hl7.org/fhir/R4/imagingstudy.html#search"


def _param(name: str, kind: str, doc: str) -> dict[str, str]:
    return {"name": name, "type": kind, "documentation": doc}


IMAGING_STUDY_PARAMS = [
    _param("_id", "token", "The StudyInstanceUID (the logical id)."),
    _param(
        "identifier",
        "token",
        "urn:dicom:uid|urn:oid:<StudyInstanceUID>, a bare UID, or an accession as "
        "<system>|<value> (also identifier:of-type=...v2-0203|ACSN|<value>).",
    ),
    _param(
        "patient",
        "reference",
        "Patient/<NHS number>; also patient.identifier and patient:identifier = "
        "https://fhir.nhs.uk/Id/nhs-number|<NHS number>.",
    ),
    _param("subject", "reference", "As patient (subject:identifier supported); only Patient subjects."),
    _param("started", "date", "eq, ne, lt, le, gt, ge, sa, eb prefixes; partial dates; repeat for a range."),
    _param("modality", "token", "DICOM modality code (http://dicom.nema.org/resources/ontology/DCM)."),
    _param("series", "token", "A SeriesInstanceUID held by the study."),
    _param("instance", "token", "A SOPInstanceUID held by the study."),
    _param("dicom-class", "token", "A SOP Class UID (urn:ietf:rfc:3986|urn:oid:<uid> or bare)."),
    _param("bodysite", "token", "SNOMED CT body site of a series (PS3.16 Annex L)."),
    _param("endpoint", "reference", "Endpoint/<id>: only studies held by that trust archive."),
    _param("status", "token", "Studies found in an archive are 'available'."),
]

_COMMON = [
    _param("_count", "number", "Page size (capped by configuration); _count=0 gives the total only."),
    _param("_summary", "token", "'count' gives the total only."),
    _param("_elements", "string", "Top-level elements to return (mandatory ones are always kept)."),
]


def security(smart: dict[str, Any] | None) -> dict[str, Any]:
    """rest.security: CORS, the SMART-on-FHIR service, and the oauth-uris extension matching discovery."""
    out: dict[str, Any] = {"cors": True}
    if smart is None:
        out["description"] = "No authorization: auth.mode is none (insecure, never with real data)."
        return out
    uris = [
        {"url": name, "valueUri": smart[key]}
        for name, key in (
            ("authorize", "authorization_endpoint"),
            ("token", "token_endpoint"),
            ("introspect", "introspection_endpoint"),
            ("revoke", "revocation_endpoint"),
        )
        if smart.get(key)
    ]
    out["extension"] = [
        {"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris", "extension": uris}
    ]
    out["service"] = [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                    "display": "SMART-on-FHIR",
                }
            ],
            "text": "OAuth2 using SMART-on-FHIR profile (see .well-known/smart-configuration)",
        }
    ]
    out["description"] = "SMART App Launch 2.2: every call but /metadata and discovery needs a Bearer token."
    return out


def capability_statement(base_url: str, software_version: str, smart: dict[str, Any] | None) -> dict[str, Any]:
    """The server's CapabilityStatement (read-only: read and search-type on four resources)."""

    def resource(kind: str, params: list[dict[str, str]], elements: bool = True, **extra: Any) -> dict[str, Any]:
        common = [c for c in _COMMON if elements or c["name"] != "_elements"]
        return {
            "type": kind,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "searchParam": params + common,
            **extra,
        }

    return {
        "resourceType": "CapabilityStatement",
        "id": "gm-imaging-facade",
        "url": f"{base_url}/metadata",
        "name": "GMImagingFacade",
        "title": "Greater Manchester imaging FHIR facade",
        "status": "active",
        "date": utc_instant()[:10],
        "publisher": "Greater Manchester imaging programme",
        "kind": "instance",
        "software": {"name": "gm-imaging-facade", "version": software_version},
        "implementation": {
            "description": "FHIR R4 facade over the Greater Manchester trust imaging archives",
            "url": base_url,
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": security(smart),
                "documentation": "Read-only. Searches are answered live from every trust archive; failures of "
                "individual archives are reported in an OperationOutcome entry (search.mode outcome).",
                "resource": [
                    resource(
                        "ImagingStudy",
                        IMAGING_STUDY_PARAMS,
                        searchInclude=["ImagingStudy:endpoint", "ImagingStudy:patient", "ImagingStudy:subject"],
                    ),
                    resource(
                        "Patient",
                        [
                            _param("_id", "token", "The NHS number."),
                            _param("identifier", "token", "https://fhir.nhs.uk/Id/nhs-number|<NHS number>."),
                        ],
                        operation=[
                            {
                                "name": "ihe-pix",
                                "definition": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
                                "documentation": "IHE PIXm: the trusts' local patient numbers for an NHS number, "
                                "and back (sourceIdentifier, targetSystem).",
                            }
                        ],
                    ),
                    resource(
                        "Endpoint",
                        [
                            _param(
                                "_id", "token", "Endpoint id: <trust>-wado-rs, or <trust>-ihe-iid for a trust viewer."
                            ),
                            _param("organization", "reference", "Organization/<ODS code>."),
                            _param(
                                "connection-type", "token", "dicom-wado-rs (the image gateway) or ihe-iid (a viewer)."
                            ),
                            _param("status", "token", "active, or off for a trust that offers no image retrieval."),
                            _param("name", "string", "Starts-with match on the name, case-insensitive."),
                        ],
                        elements=False,
                    ),
                    {
                        "type": "Practitioner",
                        "interaction": [{"code": "read"}],
                        "documentation": "The signed-in users of the embedded authorization server, as the fhirUser "
                        "claim of their tokens names them.",
                    },
                    {
                        "type": "AuditEvent",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [
                            _param("patient", "reference", "Patient/<NHS number>."),
                            _param("date", "date", "ge/gt/le/lt/eq on the recorded time."),
                            _param("agent", "token", "The client id."),
                        ],
                        "documentation": "BALP audit trail; needs system/AuditEvent.rs.",
                    },
                    resource(
                        "Organization",
                        [
                            _param("_id", "token", "The ODS code."),
                            _param("identifier", "token", "https://fhir.nhs.uk/Id/ods-organization-code|<ODS code>."),
                            _param("name", "string", "Starts-with match on the name, case-insensitive."),
                        ],
                        elements=False,
                    ),
                ],
            }
        ],
    }
