"""Settings -> archive adapters, image sources, cross-reference, federation and directory: the one place."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from app.archives.cache import CachedArchive
from app.archives.http import UpstreamAuth, new_session
from app.archives.images import ImageSource
from app.archives.metered import MeteredArchive
from app.archives.protocol import Archive
from app.archives.registry import ImageOptions, build_archive, image_source
from app.core.mapping.context import TrustMapping
from app.core.mapping.directory import endpoint_resource, organization_resource, viewer_endpoint_resource
from app.core.mapping.engine import StudyMapper
from app.core.mapping.tables import load_mapper
from app.federation.circuit import CircuitBreaker
from app.federation.fanout import TrustArchive
from app.federation.search import Federation
from app.federation.xref import CrossReference, PixmXref, load_xref
from app.settings import Settings

Resource = dict[str, Any]


@dataclass
class Parts:
    """What the settings are built into: the federation, the mapper, the trust directory, the image sources."""

    settings: Settings
    federation: Federation
    mapper: StudyMapper
    endpoints: list[Resource]
    organizations: list[Resource]
    image_sources: dict[str, ImageSource] = field(default_factory=dict)


def build_xref(settings: Settings) -> CrossReference:
    """The CSV cross-reference, or the PIXm service named by `patient_index`."""
    index = settings.patient_index
    if index is None:
        return load_xref(settings.patient_xref, {t.id for t in settings.trusts})
    session_auth = UpstreamAuth(dict(index.auth), new_session(), "patient index", index.timeout_s)
    return PixmXref(
        index.url,
        {t.id: t.ods_code for t in settings.trusts},
        {t.id: t.nhs_number.issuer for t in settings.trusts if t.nhs_number.match == "xref" and t.nhs_number.issuer},
        session_auth.headers,
        index.timeout_s,
        index.cache_ttl_s,
    )


def build_parts(settings: Settings) -> Parts:
    """Settings -> archive adapters, mapper, federation and directory: the one place this happens."""
    mapper = load_mapper()
    zone = ZoneInfo(settings.timezone)
    xref = build_xref(settings)
    trusts = []
    sources: dict[str, ImageSource] = {}
    issuers: dict[str, tuple[str, dict[str, Any]]] = {}
    for trust in settings.trusts:
        mapping = TrustMapping(
            trust.id,
            trust.ods_code,
            trust.name,
            trust.accession_system,
            zone,
            f"{trust.id}-wado-rs",
            issuers,
            f"{trust.id}-ihe-iid" if trust.viewer else None,
        )
        issuers[trust.ods_code] = (trust.accession_system, mapping.organization_reference)
        timeout = settings.timeout_of(trust)
        breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        raw = build_archive(trust, timeout)
        source = image_source(
            trust, raw, ImageOptions(timeout, settings.gateway_chunk_bytes, settings.gateway_thumbnail_px)
        )
        if source is not None:
            sources[trust.id] = source
        archive: Archive = MeteredArchive(raw)  # inside the cache: hits are not upstream calls
        if settings.cache_ttl_s > 0:
            archive = CachedArchive(archive, settings.cache_ttl_s)
        pool = ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix=f"archive-{trust.id}")
        trusts.append(TrustArchive(trust, archive, mapping, timeout, breaker, pool))
    federation = Federation(trusts, mapper, xref, zone, settings.deadline_s)
    endpoints = []
    for t in trusts:
        # The gateway, unless the trust publishes its own WADO-RS (which then protects itself).
        direct = t.settings.wado_url
        gateway = f"{settings.public_root}/dicomweb/{t.settings.id}"
        endpoints.append(
            endpoint_resource(
                t.mapping,
                direct or gateway,
                requires_token=direct is None,
                available=direct is not None or t.settings.id in sources,
            )
        )
        if t.settings.viewer:
            endpoints.append(viewer_endpoint_resource(t.mapping, t.settings.viewer))
    organizations = [organization_resource(t.mapping) for t in trusts]
    return Parts(settings, federation, mapper, endpoints, organizations, sources)
