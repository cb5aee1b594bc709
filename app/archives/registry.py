"""The archive registry: each archive `type` of the settings, with its adapter factory, image-source
factory and readiness probe.

It is the one place that dispatches on the archive type. A new archive protocol is its adapter
module (the adapter and its probe), one entry in ARCHIVE_TYPES, and its branch of `trusts[].archive`
in the settings schema (app/settings/schema.json). The schema admits only the types listed here, so
a validated configuration always finds its entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from app.archives.dicomweb.qido import DicomWebArchive, probe_dicomweb
from app.archives.dicomweb.wado import HttpWado
from app.archives.dimse import DimseArchive, probe_dimse
from app.archives.folder.archive import FolderArchive, probe_folder
from app.archives.folder.wado import FolderWado
from app.archives.http import UpstreamAuth, new_session
from app.archives.images import ImageSource
from app.archives.protocol import Archive, Probe
from app.settings import DicomWebArchiveSettings, DimseArchiveSettings, FolderArchiveSettings, TrustSettings

A = TypeVar("A", bound=Archive)
C = TypeVar("C", FolderArchiveSettings, DicomWebArchiveSettings, DimseArchiveSettings)


@dataclass(frozen=True)
class ImageOptions:
    """What an image source needs besides its archive: the trust's timeout and the gateway's settings."""

    timeout_s: float
    chunk_bytes: int
    thumbnail_px: int


@dataclass(frozen=True)
class ArchiveType(Generic[C, A]):
    """One archive type: how its adapter is built, where its images come from, how readiness probes it."""

    adapter: type[A]
    # (the trust, its `archive` settings, timeout) -> adapter; the trust gives its id and its limits
    build: Callable[[TrustSettings, C, float], A]
    image_source: Callable[[A, C, ImageOptions], ImageSource | None]  # None: no image retrieval
    probe: Callable[[A, float], Probe]

    def own(self, archive: Archive) -> A:
        """The adapter beneath the wrappers, as this type's adapter class."""
        adapter = archive.adapter
        if not isinstance(adapter, self.adapter):  # a caller mixed up two trusts: a bug, never a configuration
            raise TypeError(f"archive {archive.name}: {type(adapter).__name__} is not a {self.adapter.__name__}")
        return adapter


def _wado_url_source(name: str, url: str, options: ImageOptions) -> HttpWado:
    """WADO-RS at `url`, on a session of its own and without credentials (a DIMSE trust's `wado_url`)."""
    session = new_session()
    return HttpWado(
        name,
        url,
        session,
        UpstreamAuth({}, session, name, options.timeout_s),
        options.timeout_s,
        options.chunk_bytes,
        options.thumbnail_px,
    )


def _dicomweb_images(archive: DicomWebArchive, config: DicomWebArchiveSettings, options: ImageOptions) -> ImageSource:
    # The archive's own session: its pool, TLS options and credentials (a token fetched once serves both).
    return HttpWado(
        archive.name,
        config.wado_url or config.url,
        archive.session,
        archive.auth,
        options.timeout_s,
        options.chunk_bytes,
        options.thumbnail_px,
    )


def _dimse_images(archive: DimseArchive, config: DimseArchiveSettings, options: ImageOptions) -> ImageSource | None:
    return _wado_url_source(archive.name, config.wado_url, options) if config.wado_url else None


# Each entry typed with its adapter class, so that mypy checks its factory, image source and probe.
FOLDER: ArchiveType[FolderArchiveSettings, FolderArchive] = ArchiveType(
    FolderArchive,
    lambda trust, config, _timeout_s: FolderArchive(trust.id, config.path),
    lambda archive, _config, options: FolderWado(archive, options.chunk_bytes, options.thumbnail_px),
    probe_folder,
)
DICOMWEB: ArchiveType[DicomWebArchiveSettings, DicomWebArchive] = ArchiveType(
    DicomWebArchive,
    lambda trust, config, timeout_s: DicomWebArchive(
        trust.id,
        config.url,
        timeout_s,
        config.page_size,
        dict(config.auth),
        dict(config.tls),
        max_pages=trust.limits.max_pages,
    ),
    _dicomweb_images,
    probe_dicomweb,
)
DIMSE: ArchiveType[DimseArchiveSettings, DimseArchive] = ArchiveType(
    DimseArchive,
    lambda trust, config, timeout_s: DimseArchive(
        trust.id,
        config.host,
        config.port,
        config.called_aet,
        config.calling_aet,
        timeout_s,
        max_matches=trust.limits.max_dimse_matches,
    ),
    _dimse_images,
    probe_dimse,
)

# The settings' `trusts[].archive.type` -> its entry: the schema's enum of types is these keys.
ARCHIVE_TYPES: Mapping[str, ArchiveType[Any, Any]] = {"folder": FOLDER, "dicomweb": DICOMWEB, "dimse": DIMSE}


def archive_type(trust: TrustSettings) -> ArchiveType[Any, Any]:
    """The registry entry of the trust's `archive.type` (always there once the settings validated)."""
    return ARCHIVE_TYPES[trust.archive.type]


def build_archive(trust: TrustSettings, timeout_s: float) -> Archive:
    """The adapter a trust's `archive` settings describe (the one place settings become adapters)."""
    adapter: Archive = archive_type(trust).build(trust, trust.archive, timeout_s)
    return adapter


def image_source(trust: TrustSettings, archive: Archive, options: ImageOptions) -> ImageSource | None:
    """Where the gateway retrieves the trust's images (None: it offers no image retrieval)."""
    entry = archive_type(trust)
    return entry.image_source(entry.own(archive), trust.archive, options)


@dataclass(frozen=True)
class WadoUpstream:
    """Where a trust's images are fetched over HTTP: the WADO-RS base URL and the archive's TLS options
    (the settings schema's `tls`), for a relay other than this process (gateway.relay: nginx)."""

    base_url: str
    tls: Mapping[str, Any]


def wado_upstream(trust: TrustSettings) -> WadoUpstream | None:
    """The trust's WADO-RS over HTTP (the URL its HttpWado image source asks), None when its images
    come from elsewhere (a folder archive's own files) or not at all (a DIMSE archive without wado_url)."""
    config = trust.archive
    if isinstance(config, DicomWebArchiveSettings):
        return WadoUpstream((config.wado_url or config.url).rstrip("/"), dict(config.tls))
    if isinstance(config, DimseArchiveSettings) and config.wado_url:
        return WadoUpstream(config.wado_url.rstrip("/"), {})
    return None


def probe(trust: TrustSettings, archive: Archive, timeout_s: float) -> Probe:
    """A cheap, harmless check that the trust's archive answers, within `timeout_s`."""
    entry = archive_type(trust)
    return entry.probe(entry.own(archive), timeout_s)
