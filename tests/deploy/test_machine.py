"""Item 7 of the deployment issue: the test set-up respects the machine. scripts/install-system-deps.sh
(run by `make test`) installs what is missing and says so, and nothing the tests run stops, disables or
reconfigures a system service: each test server takes free ports of its own."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.support import ROOT
from tests.infra.orthanc import OrthancServer

SCRIPT = ROOT / "scripts" / "install-system-deps.sh"
# Commands that change a system service's state or its start-up.
SERVICE_CHANGES = re.compile(
    r"systemctl\s+(stop|disable|mask|restart|reload|kill)|update-rc\.d|/etc/init\.d/\S+\s+(stop|restart)"
    r"|\bservice\s+\S+\s+(stop|restart)|invoke-rc\.d|pg_ctlcluster|pg_dropcluster|rc-update"
)


def _code(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_install_script_never_changes_a_system_service():
    assert SERVICE_CHANGES.search("systemctl stop orthanc") and SERVICE_CHANGES.search("update-rc.d orthanc disable")
    assert not SERVICE_CHANGES.search(_code(SCRIPT.read_text()))


def test_install_script_names_what_it_installs():
    text = SCRIPT.read_text()
    packages = re.search(r"^PACKAGES=\(([^)]*)\)", text, re.M)
    assert packages is not None
    names = packages.group(1).split()
    assert {"nginx", "postgresql", "orthanc", "orthanc-dicomweb", "redis-server"} <= set(names)
    header = text.split("set -euo pipefail")[0]
    for name in names:
        assert re.search(rf"^#\s+.*\b{re.escape(name)}\b.*:", header, re.M), f"{name} is not explained"
    assert 'echo "install-system-deps: installing ${missing[*]}"' in text
    assert "policy-rc.d" in text, "packages' daemons are kept from starting during installation"


def test_no_test_code_touches_a_system_service():
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "scripts", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if path != Path(__file__).resolve() and SERVICE_CHANGES.search(_code(path.read_text(encoding="utf-8")))
    ]
    assert offenders == []
    makefile = _code((ROOT / "Makefile").read_text())
    assert not SERVICE_CHANGES.search(makefile)


def test_test_orthanc_takes_free_ports_not_the_default_ones():
    server = OrthancServer(aet="PORTS")
    server.workdir = ROOT  # config() only names paths under it; nothing is started
    server.http_port, server.dicom_port = 40001, 40002  # what start() takes from free_port()
    config = server.config()
    assert (config["HttpPort"], config["DicomPort"]) == (40001, 40002)
    assert config["RemoteAccessAllowed"] is False
    source = (ROOT / "tests" / "infra" / "orthanc.py").read_text()
    assert "self.http_port = free_port()" in source and "self.dicom_port = free_port()" in source
    assert "8042" not in _code(source) and "4242" not in _code(source)
