"""Trust archive adapters behind one protocol; `build_archive` picks one by configuration."""

from __future__ import annotations

from app.archives.dicomweb.qido import DicomWebArchive
from app.archives.folder.archive import FolderArchive
from app.archives.protocol import Archive, ArchiveError
from app.core.query import PatientKey, StudyQuery
from app.settings import TrustSettings

__all__ = ["Archive", "ArchiveError", "PatientKey", "StudyQuery", "build_archive"]


def build_archive(trust: TrustSettings, timeout_s: float) -> Archive:
    """The adapter a trust's `archive` settings describe (the one place settings become adapters)."""
    config = trust.archive
    kind = config["type"]
    if kind == "folder":
        return FolderArchive(trust.id, config["path"])
    if kind == "dicomweb":
        return DicomWebArchive(
            trust.id, config["url"], timeout_s, config.get("page_size", 500), config.get("auth"), config.get("tls")
        )
    if kind == "dimse":
        from app.archives.dimse import DimseArchive

        return DimseArchive(
            trust.id,
            config["host"],
            config["port"],
            config["called_aet"],
            config.get("calling_aet", "GMFACADE"),
            timeout_s,
        )
    raise ValueError(f"trusts[{trust.id}].archive.type: unknown archive type {kind!r}")
