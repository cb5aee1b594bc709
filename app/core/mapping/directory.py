"""The trusts' Organization and Endpoint resources, built from configuration (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core import systems
from app.core.mapping.context import TrustMapping


def organization_resource(trust: TrustMapping) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": trust.ods_code,
        "identifier": [{"use": "official", "system": systems.ODS_ORGANIZATION_CODE, "value": trust.ods_code}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": systems.ORGANIZATION_TYPE,
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "name": trust.name,
        "endpoint": [trust.endpoint_reference],
    }


def endpoint_resource(
    trust: TrustMapping, address: str, requires_token: bool, available: bool = True
) -> dict[str, Any]:
    """The trust's WADO-RS Endpoint: clients append /studies/{StudyInstanceUID} to `address`.

    `requires_token`: the address wants the caller's SMART access token (the facade's own gateway),
    stated with the SMART Imaging Access extension. `available` False: the trust's images cannot be
    retrieved (a DIMSE-only archive without WADO-RS), and the Endpoint says so with status `off`.
    """
    extension = [{"url": systems.SMART_REQUIRES_ACCESS_TOKEN, "valueBoolean": True}] if requires_token else []
    return {
        "resourceType": "Endpoint",
        "id": trust.endpoint_id,
        **({"extension": extension} if extension else {}),
        "identifier": [{"system": systems.URI, "value": address}],
        "status": "active" if available else "off",
        "connectionType": {
            "system": systems.ENDPOINT_CONNECTION_TYPE,
            "code": "dicom-wado-rs",
            "display": "DICOM WADO-RS",
        },
        "name": f"{trust.name} imaging archive (DICOMweb WADO-RS)",
        "managingOrganization": trust.organization_reference,
        "payloadType": [
            {
                "coding": [{"system": systems.ENDPOINT_PAYLOAD_TYPE, "code": "any", "display": "Any"}],
                "text": "DICOM WADO-RS",
            }
        ],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def viewer_endpoint_resource(trust: TrustMapping, viewer: Mapping[str, Any]) -> dict[str, Any]:
    """The trust's own zero-footprint viewer (IHE Invoke Image Display).

    `address` is an RFC 6570 template: the EPR fills {studyUID}, {accessionNumber} and {patientID}
    (the NHS number) from the ImagingStudy and opens the result in a browser.
    """
    return {
        "resourceType": "Endpoint",
        "id": trust.viewer_endpoint_id,
        "identifier": [{"system": systems.URI, "value": viewer["url_template"]}],
        "status": "active",
        "connectionType": {"system": systems.ENDPOINT_CONNECTION_TYPE, "code": "ihe-iid", "display": "IHE IID"},
        "name": viewer.get("name") or f"{trust.name} image viewer (IHE Invoke Image Display)",
        "managingOrganization": trust.organization_reference,
        "payloadType": [
            {
                "coding": [{"system": systems.ENDPOINT_PAYLOAD_TYPE, "code": "none", "display": "None"}],
                "text": "IHE Invoke Image Display",
            }
        ],
        "payloadMimeType": ["text/html"],
        "address": viewer["url_template"],
    }
