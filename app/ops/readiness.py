"""Readiness: configuration loaded, audit store writable, and each archive's state.

An archive is *available* when a cheap probe reaches it and its circuit is not open. Each archive
type's probe comes from the archive registry (app.archives.registry) and is harmless and short: a
folder must exist; a DICOMweb archive is asked one QIDO-RS `/studies?StudyInstanceUID=2.25.0&limit=1`
(an exact key that matches nothing, never a wildcard); a DIMSE archive one C-ECHO. They run in
parallel, each within `probe_timeout_s`, and their results are reused for `cache_s` seconds by
every caller, so /readyz cannot be used to hammer the archives. Circuit states are read live.
Nothing here touches a patient's data or an archive's circuit.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.archives import registry
from app.archives.protocol import Probe
from app.audit.store import AuditStore
from app.federation.fanout import TrustArchive
from app.settings import OpsSettings


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
                    t.settings.id: self._pool.submit(registry.probe, t.settings, t.archive, self.ops.probe_timeout_s)
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
