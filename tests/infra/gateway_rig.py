"""A large study (hundreds of MB, generated on the fly) in a real Orthanc, and the facade in front of it
under gunicorn: what the gateway's memory test and bench/gateway.py both measure.

    with GatewayRig(megabytes=300) as rig:
        rig.gateway_url(path), rig.direct_url(path), rig.headers, rig.worker_peak_rss_kib()
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from app.web.components import components
from tests.infra import InfraError, free_port, stop_process_group
from tests.infra.orthanc import OrthancServer

ROOT = Path(__file__).resolve().parents[2]
NHS_NUMBER = "9990000026"  # check digit valid; no demo patient has it
INSTANCE_MB = 2  # 1024 x 1024 x 16 bit


def write_large_study(folder: Path, megabytes: int, seed: int = 7) -> tuple[str, list[Path]]:
    """One CT-like study of `megabytes` MB of incompressible 16-bit pixel data, 2 MB per instance."""
    rng = random.Random(seed)
    study, series = generate_uid(), generate_uid()
    paths = []
    for number in range(1, max(1, megabytes // INSTANCE_MB) + 1):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = NHS_NUMBER, "NHS", "Large^Study"
        ds.Modality, ds.StudyDate, ds.InstanceNumber, ds.SeriesNumber = "OT", "20260101", number, 1
        ds.Rows = ds.Columns = 1024
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.randbytes(1024 * 1024 * 2)
        path = folder / f"{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study, paths


class GatewayRig:
    def __init__(
        self,
        megabytes: int = 300,
        workers: int = 1,
        threads: int = 4,
        chunk_bytes: int | None = None,
        relay: str = "python",
    ) -> None:
        self.megabytes = megabytes
        self.config_path: Path | None = None
        self.relay = relay  # gateway.relay: "nginx" hands retrievals marked by nginx to it (app.web.accel)
        self.chunk_bytes = chunk_bytes
        self.workers = workers
        self.threads = threads
        self.workdir = Path(tempfile.mkdtemp(prefix="gateway-rig-"))
        self.orthanc = OrthancServer(aet="BIGSTUDY", extra_config={"HttpCompressionEnabled": False})
        self.study_uid = ""
        self.port = 0
        self.headers: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses -------------------------------------------------------
    def gateway_url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/dicomweb/big/studies/{self.study_uid}{path}"

    def direct_url(self, path: str = "") -> str:
        return f"{self.orthanc.dicomweb_url}/studies/{self.study_uid}{path}"

    # -- lifecycle -------------------------------------------------------
    def start(self) -> GatewayRig:
        self.orthanc.start()
        files = self.workdir / "files"
        files.mkdir()
        self.study_uid, paths = write_large_study(files, self.megabytes)
        session = requests.Session()
        for path in paths:
            reply = session.post(f"{self.orthanc.url}/instances", data=path.read_bytes(), timeout=60)
            if reply.status_code != 200:
                raise InfraError(f"Orthanc refused {path.name}: {reply.status_code}")
            path.unlink()  # the archive has it now; keep the disk free
        self.port = free_port()
        config = self._config()
        self._token(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACADE_")}
        env["FACADE_CONFIG"] = str(config)
        log = (self.workdir / "gunicorn.log").open("wb")
        self._process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--worker-class",
                "gthread",
                "--threads",
                str(self.threads),
                "--timeout",
                "300",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise InfraError(f"gunicorn exited: {(self.workdir / 'gunicorn.log').read_text()[-2000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/fhir/metadata", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise InfraError("gunicorn did not answer within 120 s")

    def _config(self) -> Path:
        doc: dict[str, Any] = {
            "demo": True,  # a test rig: no cursor secret of its own (app.settings.demo_problems)
            "base_url": f"http://127.0.0.1:{self.port}/fhir",
            "trusts": [
                {
                    "id": "big",
                    "name": "Large Study Trust",
                    "ods_code": "RXX",
                    "archive": {"type": "dicomweb", "url": self.orthanc.dicomweb_url, "timeout_s": 30},
                    "nhs_number": {"match": "patient_id", "issuer": "NHS"},
                }
            ],
            "audit": {"path": str(self.workdir / "audit.sqlite")},
            "gateway": {"relay": self.relay, **({"chunk_bytes": self.chunk_bytes} if self.chunk_bytes else {})},
            "auth": {
                "mode": "embedded",
                "signing_keys": str(self.workdir / "keys.json"),
                "store": f"sqlite:{self.workdir / 'auth.sqlite'}",
                "clients": [
                    {
                        "client_id": "bench",
                        "name": "bench",
                        "grant_types": ["client_credentials"],
                        "jwks": {"keys": []},
                        "scope": "system/*.rs",
                    }
                ],
            },
        }
        path = self.workdir / "facade.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.config_path = path
        return path

    def _token(self, config: Path) -> None:
        """A system token signed with the server's own keys (created here, read by gunicorn's workers)."""
        from app import create_app

        app = create_app(config)
        server = components(app).auth_server
        assert server is not None, "the rig's configuration has an embedded SMART server"
        token = server.issuer("client_credentials", server.clients["bench"], None, "system/*.rs")["access_token"]
        self.headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}

    def worker_pids(self) -> list[int]:
        assert self._process is not None
        children = Path(f"/proc/{self._process.pid}/task/{self._process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by the archive and by the gunicorn workers."""

        def of(pid: int) -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        assert self.orthanc._proc is not None
        return {"archive": of(self.orthanc._proc.pid), "gateway": sum(of(pid) for pid in self.worker_pids())}

    def worker_peak_rss_kib(self) -> int:
        """The largest peak resident set (VmHWM) of the gunicorn workers, in KiB."""
        peaks = []
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
        return max(peaks)

    def stop(self) -> None:
        if self._process is not None:
            stop_process_group(self._process)
        self.orthanc.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> GatewayRig:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
