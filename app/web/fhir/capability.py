"""The CapabilityStatement: exactly what this server supports; its searches come from the registry (app/core/search)."""

from __future__ import annotations

from typing import Any

from app.core import systems
from app.core.instants import utc_instant
from app.core.search.diagnostic_report import imaging_study_search_parameter
from app.core.search.registry import ResourceSearch
from app.core.search.resources import SEARCHES

FHIR_VERSION = "4.0.1"


def search_params(search: ResourceSearch[Any]) -> list[dict[str, str]]:
    """searchParam: the type's parameters (an alias is documented under its parameter), then the result
    parameters listed there (_count, _summary, and _elements where the type has elements to choose)."""
    params = []
    for parameter in search.parameters:
        aliases: dict[str, list[str]] = {}  # documentation -> the aliases it documents
        for alias in parameter.aliases:
            aliases.setdefault(alias.documentation, []).append(f"`{alias.name}`")
        documentation = " ".join([parameter.documentation, *(f"{', '.join(a)}: {d}" for d, a in aliases.items())])
        params.append({"name": parameter.name, "type": parameter.type, "documentation": documentation})
    params += [
        {"name": r.name, "type": r.type, "documentation": r.documentation}
        for r in search.result_parameters()
        if r.in_capability
    ]
    return params


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
    out["extension"] = [{"url": systems.SMART_OAUTH_URIS, "extension": uris}]
    out["service"] = [
        {
            "coding": [
                {
                    "system": systems.RESTFUL_SECURITY_SERVICE,
                    "code": "SMART-on-FHIR",
                    "display": "SMART-on-FHIR",
                }
            ],
            "text": "OAuth2 using SMART-on-FHIR profile (see .well-known/smart-configuration)",
        }
    ]
    out["description"] = "SMART App Launch 2.2: every call but /metadata and discovery needs a Bearer token."
    return out


def own_search_parameters(base_url: str) -> list[dict[str, Any]]:
    """The search parameters R4 does not define, defined here (contained in the CapabilityStatement, and read at
    their `url`: {base}/SearchParameter/{id})."""
    return [imaging_study_search_parameter(base_url)]


def search_parameter(base_url: str, parameter_id: str) -> dict[str, Any] | None:
    return next((p for p in own_search_parameters(base_url) if p["id"] == parameter_id), None)


def capability_statement(base_url: str, software_version: str, smart: dict[str, Any] | None) -> dict[str, Any]:
    """The server's CapabilityStatement (read-only: read and search-type on four resources)."""

    own = own_search_parameters(base_url)
    definitions = {(p["base"][0], p["code"]): p["url"] for p in own}

    def resource(kind: str, **extra: Any) -> dict[str, Any]:
        search = SEARCHES[kind]
        includes = {"searchInclude": [i.value for i in search.includes]} if search.includes else {}
        params = [
            {**p, "definition": definitions[(kind, p["name"])]} if (kind, p["name"]) in definitions else p
            for p in search_params(search)
        ]
        return {
            "type": kind,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "searchParam": params,
            **includes,
            **extra,
        }

    return {
        "resourceType": "CapabilityStatement",
        "id": "gm-imaging-facade",
        "contained": own,
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
                    resource("ImagingStudy"),
                    resource(
                        "DiagnosticReport",
                        documentation="Imaging reports read from the report objects the archives hold (DICOM SR, "
                        "TID 2000, and encapsulated PDF); a PDF's presentedForm.url is the gateway's token-protected "
                        "report document route.",
                    ),
                    resource(
                        "DocumentReference",
                        documentation="IHE MHD DocumentEntry (ITI-67 Find Document References): one per study and "
                        "holding trust, derived from the same archive answers as ImagingStudy.",
                    ),
                    resource(
                        "Patient",
                        operation=[
                            {
                                "name": "ihe-pix",
                                "definition": systems.PIXM_OPERATION,
                                "documentation": "IHE PIXm: the trusts' local patient numbers for an NHS number, "
                                "and back (sourceIdentifier, targetSystem).",
                            }
                        ],
                    ),
                    resource("Endpoint"),
                    {
                        "type": "Practitioner",
                        "interaction": [{"code": "read"}],
                        "documentation": "The signed-in users of the embedded authorization server, as the fhirUser "
                        "claim of their tokens names them.",
                    },
                    {
                        "type": "AuditEvent",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": search_params(SEARCHES["AuditEvent"]),
                        "documentation": "BALP audit trail; needs system/AuditEvent.rs.",
                    },
                    resource("Organization"),
                ],
            }
        ],
    }
