"""Readiness: configuration loaded, audit store writable, and each archive's state.

An archive is *available* when a cheap probe reaches it and its circuit is not open. Probes are
harmless and short: a folder must exist; a DICOMweb archive is asked one QIDO-RS
`/studies?StudyInstanceUID=2.25.0&limit=1` (an exact key that matches nothing, never a wildcard);
a DIMSE archive one C-ECHO. They run in parallel, each within `probe_timeout_s`, and their results
are reused for `cache_s` seconds by every caller, so /readyz cannot be used to hammer the archives.
Circuit states are read live. Nothing here touches a patient's data or an archive's circuit.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from app.archives.dicomweb.qido import DicomWebArchive
from app.archives.http import failure_reason
from app.archives.protocol import Archive
from app.audit.events import AuditStore
from app.federation.fanout import TrustArchive
from app.settings import OpsSettings, TrustSettings

PROBE_STUDY_UID = "2.25.0"  # a syntactically valid UID under the UUID root that no study has


@dataclass(frozen=True)
class Probe:
    reachable: bool
    reason: str | None = None


def _adapter(archive: Archive) -> Archive:
    """The adapter inside the metering and caching wrappers."""
    while hasattr(archive, "inner"):
        archive = archive.inner
    return archive


def probe_folder(path: Path) -> Probe:
    return Probe(True) if path.is_dir() else Probe(False, "folder missing")


def probe_dicomweb(archive: DicomWebArchive, timeout_s: float) -> Probe:
    url = f"{archive.url}/studies?StudyInstanceUID={PROBE_STUDY_UID}&limit=1"
    try:
        response = archive.session.get(
            url,
            timeout=timeout_s,
            auth=archive.auth.basic(),
            headers={"Accept": "application/dicom+json", **archive.auth.headers()},
        )
    except requests.RequestException as exc:
        return Probe(False, failure_reason(exc, timeout_s))
    except Exception:  # e.g. no upstream access token (ArchiveError), a malformed URL
        return Probe(False, "request failed")
    if response.status_code in (200, 204):
        return Probe(True)
    return Probe(False, f"HTTP {response.status_code}")


def probe_dimse(config: dict[str, Any], timeout_s: float) -> Probe:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=config.get("calling_aet", "GMFACADE"))
    ae.add_requested_context(Verification)
    for setting in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, setting, timeout_s)
    try:
        assoc = ae.associate(config["host"], config["port"], ae_title=config["called_aet"])
    except Exception:
        return Probe(False, "could not open a connection")
    if not assoc.is_established:
        return Probe(False, "association rejected" if assoc.is_rejected else "connection refused or unreachable")
    try:
        status = assoc.send_c_echo()
        ok = status is not None and getattr(status, "Status", None) == 0x0000
        return Probe(True) if ok else Probe(False, "C-ECHO failed")
    finally:
        assoc.release()


def probe_archive(settings: TrustSettings, archive: Archive, timeout_s: float) -> Probe:
    adapter = _adapter(archive)
    kind = settings.archive["type"]
    if kind == "folder":
        return probe_folder(Path(settings.archive["path"]))
    if kind == "dicomweb" and isinstance(adapter, DicomWebArchive):
        return probe_dicomweb(adapter, timeout_s)
    if kind == "dimse":
        return probe_dimse(settings.archive, timeout_s)
    return Probe(False, "no probe for this archive type")


class Readiness:
    """The /readyz report; archive probes cached for `readiness_cache_s`, one probe round at a time."""

    def __init__(self, trusts: list[TrustArchive], audit: AuditStore, ops: OpsSettings) -> None:
        self.trusts = trusts
        self.audit = audit
        self.ops = ops
        self._lock = threading.Lock()
        self._probed: dict[str, Probe] = {}
        self._probed_at = float("-inf")
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(len(trusts), 16)), thread_name_prefix="readiness")

    def _probes(self) -> dict[str, Probe]:
        with self._lock:  # concurrent callers wait for the round in progress, then share it
            if time.monotonic() - self._probed_at >= self.ops.readiness_cache_s:
                jobs = {
                    t.settings.id: self._pool.submit(probe_archive, t.settings, t.archive, self.ops.probe_timeout_s)
                    for t in self.trusts
                }
                self._probed = {trust_id: job.result() for trust_id, job in jobs.items()}
                self._probed_at = time.monotonic()
            return self._probed

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the JSON report): no patient data, no archive addresses."""
        probes = self._probes()
        archives: dict[str, Any] = {}
        available = 0
        for trust in self.trusts:
            probe, circuit = probes[trust.settings.id], trust.breaker.state
            entry: dict[str, Any] = {
                "type": trust.settings.archive["type"],
                "reachable": probe.reachable,
                "circuit": circuit,
            }
            if probe.reason:
                entry["reason"] = probe.reason
            entry["available"] = probe.reachable and circuit != "open"
            available += entry["available"]
            archives[trust.settings.id] = entry
        audit_ok = self.audit.writable()
        required = self.ops.archives_required
        archives_ok = (
            required == "none"
            or (required == "any" and available > 0)
            or (required == "all" and available == len(self.trusts))
        )
        ready = audit_ok and archives_ok
        return ready, {
            "status": "ready" if ready else "not ready",
            "configuration": "loaded",
            "audit_store": "writable" if audit_ok else "not writable",
            "archives_required": required,
            "archives_available": available,
            "archives": archives,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False)
