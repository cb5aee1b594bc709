"""A real Orthanc (+ DICOMweb plugin) archive on loopback for integration tests."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

from tests.infra import INSTALL_HINT, InfraError, free_port, log_tail, require_binary

PLUGIN_ENV = "ORTHANC_DICOMWEB_PLUGIN"
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)


def find_dicomweb_plugin() -> str:
    """Path of the DICOMweb plugin shared library (env override: ORTHANC_DICOMWEB_PLUGIN)."""
    override = os.environ.get(PLUGIN_ENV)
    if override:
        if not Path(override).is_file():
            raise InfraError(f"{PLUGIN_ENV}={override} does not exist")
        return override
    for pattern in PLUGIN_CANDIDATES:
        for match in sorted(glob.glob(pattern)):
            if Path(match).is_file():
                return match
    raise InfraError(f"Orthanc DICOMweb plugin (libOrthancDicomWeb.so) not found: {INSTALL_HINT}")


class OrthancServer:
    """Starts ``Orthanc config.json`` with its own storage, ports and AE title.

    Usage::

        with OrthancServer(aet="TRUSTA") as orthanc:
            orthanc.upload([path])
            requests.get(orthanc.dicomweb_url + "/studies")
    """

    def __init__(
        self,
        aet: str = "ORTHANC",
        *,
        startup_timeout: float = 20.0,
        extra_config: dict[str, Any] | None = None,
        dicomweb_config: dict[str, Any] | None = None,
    ) -> None:
        self.aet = aet
        self.startup_timeout = startup_timeout
        self.extra_config = dict(extra_config or {})
        self.dicomweb_config = dict(dicomweb_config or {})
        self.http_port = 0
        self.dicom_port = 0
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._session = requests.Session()

    # -- addresses -------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + "/dicom-web"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "orthanc.log"

    # -- lifecycle -------------------------------------------------------
    def config(self) -> dict[str, Any]:
        assert self.workdir is not None
        dicomweb: dict[str, Any] = {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
            "StudiesMetadata": "MainDicomTags",
            "SeriesMetadata": "MainDicomTags",
        }
        dicomweb.update(self.dicomweb_config)
        config: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "Plugins": [find_dicomweb_plugin()],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "DicomServerEnabled": True,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "StableAge": 1,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "HttpThreadsCount": 20,
            "DefaultEncoding": "Utf8",
            "KeepAlive": True,
            "DicomWeb": dicomweb,
        }
        config.update(self.extra_config)
        return config

    def start(self) -> OrthancServer:
        binary = require_binary("Orthanc")
        self.workdir = Path(tempfile.mkdtemp(prefix="orthanc-test-"))
        self.http_port = free_port()
        self.dicom_port = free_port()
        while self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        config_path = self.workdir / "config.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        self._log_file = open(self.log_path, "wb")
        began = time.monotonic()
        self._proc = subprocess.Popen(
            [binary, str(config_path)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise InfraError(self._failure(f"Orthanc exited with code {self._proc.returncode}"))
            try:
                reply = self._session.get(self.url + "/system", timeout=1.0)
                if reply.status_code == 200:
                    self._check_plugin()
                    return
                last_error = f"/system answered HTTP {reply.status_code}"
            except requests.RequestException as exc:
                last_error = repr(exc)
            time.sleep(0.05)
        raise InfraError(self._failure(f"Orthanc did not answer /system within {self.startup_timeout}s ({last_error})"))

    def _check_plugin(self) -> None:
        plugins = self._session.get(self.url + "/plugins", timeout=5.0).json()
        if "dicom-web" not in plugins:
            raise InfraError(self._failure(f"DICOMweb plugin not loaded (plugins: {plugins})"))

    def _failure(self, reason: str) -> str:
        return f"{reason}; {INSTALL_HINT} if Orthanc is missing.\n--- Orthanc log tail ---\n" + log_tail(self.log_path)

    def stop(self, timeout: float = 10.0, *, graceful: bool = True) -> None:
        """Stop Orthanc: SIGTERM (Orthanc 1.10 needs ~3.5 s to shut down), SIGKILL on timeout.

        ``graceful=False`` kills at once (the storage is a throw-away temp dir).
        """
        proc, self._proc = self._proc, None
        self._session.close()
        if proc is not None and proc.poll() is None:
            if graceful:
                proc.terminate()
            else:
                proc.kill()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.workdir is not None and not os.environ.get("KEEP_TEST_ARCHIVES"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- data ------------------------------------------------------------
    def upload(self, paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
        """POST each Part 10 file to ``/instances``; return Orthanc's answers."""
        answers: list[dict[str, Any]] = []
        for path in paths:
            body = Path(path).read_bytes()
            reply = self._session.post(
                self.url + "/instances",
                data=body,
                headers={"Content-Type": "application/dicom"},
                timeout=30.0,
            )
            if reply.status_code != 200:
                raise InfraError(f"upload of {path} failed: HTTP {reply.status_code} {reply.text[:300]}")
            answers.append(reply.json())
        return answers

    def get_json(self, path: str, **params: Any) -> Any:
        """GET ``url + path`` and decode JSON (raises on HTTP errors)."""
        reply = self._session.get(self.url + path, params=params or None, timeout=30.0)
        reply.raise_for_status()
        return reply.json()
