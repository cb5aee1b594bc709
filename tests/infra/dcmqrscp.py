"""dcmtk's ``dcmqrscp`` as a real legacy DIMSE (C-ECHO/C-STORE/C-FIND) archive on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.infra import INSTALL_HINT, InfraError, free_port, log_tail, require_binary

CONFIG_TEMPLATE = """\
# generated for integration tests
NetworkTCPPort  = {port}
MaxPDUSize      = 16384
MaxAssociations = 16

HostTable BEGIN
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{aet}   {storage}   RW   (200, 1024mb)   ANY
AETable END
"""


class DcmqrscpServer:
    """Starts ``dcmqrscp -c <cfg> PORT`` with one RW storage area that accepts any peer AE."""

    def __init__(
        self,
        aet: str = "DCMQRSCP",
        *,
        startup_timeout: float = 15.0,
        extra_args: Iterable[str] = (),
    ) -> None:
        if not aet or len(aet) > 16 or " " in aet:
            raise ValueError(f"invalid AE title {aet!r}")
        self.aet = aet
        self.host = "127.0.0.1"
        self.port = 0
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def storage_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "storage"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "dcmqrscp.log"

    def start(self) -> DcmqrscpServer:
        binary = require_binary("dcmqrscp")
        self.workdir = Path(tempfile.mkdtemp(prefix="dcmqrscp-test-"))
        self.storage_dir.mkdir()
        self.port = free_port()
        config = self.workdir / "dcmqrscp.cfg"
        config.write_text(CONFIG_TEMPLATE.format(port=self.port, aet=self.aet, storage=self.storage_dir))
        log = open(self.log_path, "wb")
        self._log_file = log
        began = time.monotonic()
        self._proc = subprocess.Popen(
            [binary, "-c", str(config), *self.extra_args, str(self.port)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
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
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise InfraError(self._failure(f"dcmqrscp exited with code {self._proc.returncode}"))
            ok, last = self.echo()
            if ok:
                return
            time.sleep(0.05)
        raise InfraError(self._failure(f"dcmqrscp did not answer C-ECHO within {self.startup_timeout}s ({last})"))

    def echo(self, calling_aet: str = "ECHOSCU") -> tuple[bool, str]:
        """One C-ECHO with pynetdicom; returns (success, detail)."""
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=calling_aet)
        ae.add_requested_context(Verification)
        ae.acse_timeout = 2
        ae.network_timeout = 2
        assoc = ae.associate(self.host, self.port, ae_title=self.aet)
        if not assoc.is_established:
            return False, "association not established"
        try:
            status = assoc.send_c_echo()
            code = getattr(status, "Status", None)
            return code == 0x0000, f"C-ECHO status {code!r}"
        finally:
            assoc.release()

    def store(self, paths: Iterable[str | os.PathLike[str]], calling_aet: str = "STORESCU") -> None:
        """Send Part 10 files with dcmtk's ``storescu``."""
        files = [str(p) for p in paths]
        if not files:
            return
        storescu = require_binary("storescu")
        result = subprocess.run(
            [
                storescu,
                "-aet",
                calling_aet,
                "-aec",
                self.aet,
                self.host,
                str(self.port),
                *files,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise InfraError(
                f"storescu failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"--- dcmqrscp log tail ---\n{log_tail(self.log_path)}"
            )

    def _failure(self, reason: str) -> str:
        return f"{reason}; {INSTALL_HINT} if dcmtk is missing.\n--- dcmqrscp log tail ---\n" + log_tail(self.log_path)

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc, "terminate")
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, "kill")
                proc.wait(timeout=timeout)
        if proc is not None:
            # forked association handlers share the process group
            _signal_group(proc, "kill")
        log = self._log_file
        self._log_file = None
        if log is not None:
            log.close()
        if self.workdir is not None and not os.environ.get("KEEP_TEST_ARCHIVES"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DcmqrscpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], how: str) -> None:
    """Signal the process group that ``proc`` leads (it was started in its own session)."""
    sig = signal.SIGTERM if how == "terminate" else signal.SIGKILL
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
