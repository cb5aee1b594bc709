"""The facade's services as the web layer sees them: one typed container, built once per app."""

from __future__ import annotations

from dataclasses import dataclass

from app.archives.images import ImageSource
from app.federation.search import Federation
from app.services.build import build_parts
from app.services.directory import Directory
from app.services.documents import DocumentService
from app.services.imaging import ImagingService
from app.services.owners import StudyOwners
from app.services.patients import PatientService
from app.services.reports import ReportService
from app.settings import Settings


@dataclass(frozen=True)
class Services:
    """What the views, the gateway and the authorization server may ask of the facade."""

    settings: Settings
    imaging: ImagingService
    documents: DocumentService
    reports: ReportService
    patients: PatientService
    directory: Directory
    owners: StudyOwners
    image_sources: dict[str, ImageSource]
    federation: Federation  # for operations: readiness, metrics, shutdown

    def close(self) -> None:
        self.federation.close()


def build_services(settings: Settings) -> Services:
    """Settings -> archives, federation and the services over them (the one place this happens)."""
    parts = build_parts(settings)
    imaging = ImagingService(parts)
    reports = ReportService(imaging, parts.image_sources)
    return Services(
        settings=settings,
        imaging=imaging,
        documents=DocumentService(imaging, parts.endpoints, reports),
        reports=reports,
        patients=PatientService(settings, parts.federation),
        directory=Directory(parts.endpoints, parts.organizations),
        owners=StudyOwners(parts.federation, settings.gateway_owner_cache_s),
        image_sources=parts.image_sources,
        federation=parts.federation,
    )
