"""End-to-end fixtures: real facade processes (`python -m app serve`), a real Redis, real clients.

Each server gets its own copy of config/demo.yaml in a temporary folder, with every path absolute
(the demo dataset that tests/conftest.py generates, and the audit log, signing keys and auth state
in the temporary folder), its base URL and the imaging timeline's redirect URI on its own port.
Processes are started in their own session and stopped by their own id at the end.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.infra import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
PORTAL_KEY = ROOT / "config" / "demo-keys" / "portal.private.jwk.json"
START_TIMEOUT_S = 120
HTTP_TIMEOUT_S = 30
NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
SYSTEM_SCOPE = "system/ImagingStudy.rs system/Patient.rs system/Endpoint.rs"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def timeline_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/apps/imaging-timeline/"


@dataclass
class Facade:
    """A running `python -m app serve`."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path
    env: dict[str, str] = field(repr=False)
    public_port: int = 0

    @property
    def origin(self) -> str:
        """Where this process listens."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.origin}/fhir"

    @property
    def public_base(self) -> str:
        """The base URL in its configuration: token `iss`/`aud`, assertion `aud`, links."""
        return f"http://127.0.0.1:{self.public_port or self.port}/fhir"

    @property
    def token_url(self) -> str:
        """The public token URL (the `aud` of client assertions)."""
        return f"http://127.0.0.1:{self.public_port or self.port}/auth/token"

    def url(self, path: str) -> str:
        """`path` on this very process (not on the public address)."""
        return f"{self.origin}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def write_config(
    folder: Path, document: dict[str, Any], port: int, *, store: str | None = None, signing_keys: Path | None = None
) -> Path:
    """A copy of the demo configuration for a server whose public address is on `port`, paths absolute."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = copy.deepcopy(document)
    doc["base_url"] = f"http://127.0.0.1:{port}/fhir"
    doc["audit"]["path"] = str(folder / "audit.sqlite")
    auth = doc["auth"]
    auth["signing_keys"] = str(signing_keys or folder / "signing-keys.json")
    auth["store"] = store or f"sqlite:{folder / 'auth-state.sqlite'}"
    for client in auth["clients"]:
        if client["client_id"] == "imaging-timeline":
            client["redirect_uris"] = [timeline_url(port)]
    path = folder / "facade.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def start_facade(tmp_path_factory: pytest.TempPathFactory, config_document: dict[str, Any]) -> Iterator[Any]:
    """start_facade(name, port=None, public_port=None, store=None, signing_keys=None, workers=2, env=None,
    client_scopes=None).

    `public_port`: the port of the public base URL when it is not the server's own (several
    processes behind one address, as behind a load balancer); the server's own port otherwise.
    """
    started: list[Facade] = []

    def start(
        name: str,
        *,
        port: int | None = None,
        public_port: int | None = None,
        store: str | None = None,
        signing_keys: Path | None = None,
        workers: int = 2,
        env: dict[str, str] | None = None,
        client_scopes: dict[str, str] | None = None,
    ) -> Facade:
        port = port or free_port()
        public_port = public_port or port
        folder = tmp_path_factory.mktemp(f"facade-{name}")
        document = copy.deepcopy(config_document)
        for client in document["auth"]["clients"]:
            # A client registered with other scopes than the demo's (client_id: its scope).
            client["scope"] = (client_scopes or {}).get(client["client_id"], client["scope"])
        config = write_config(folder, document, public_port, store=store, signing_keys=signing_keys)
        process_env = {k: v for k, v in os.environ.items() if not k.startswith("FACADE_")}
        process_env["FACADE_BASE_URL"] = f"http://127.0.0.1:{public_port}/fhir"
        process_env.update(env or {})
        log_path = folder / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "app",
                    "serve",
                    "--config",
                    str(config),
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                    "--threads",
                    "8",
                ],
                cwd=ROOT,
                env=process_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        facade = Facade(port, process, log_path, config, process_env, public_port)
        started.append(facade)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"facade {name} exited with {process.returncode}:\n{facade.log()}")
            try:
                if requests.get(f"{facade.base}/metadata", timeout=2).status_code == 200:
                    return facade
            except requests.RequestException:
                pass
            time.sleep(0.3)
        pytest.fail(f"facade {name} not ready within {START_TIMEOUT_S} s:\n{facade.log()}")

    yield start
    for facade in started:
        stop_process_group(facade.process)


# -- SMART Backend Services ---------------------------------------------------------------------
def client_assertion(token_url: str, *, client_id: str = "portal", jti: str | None = None) -> str:
    """A private_key_jwt assertion of the demo `portal` client (RS384, 4 minutes)."""
    from joserfc import jwt
    from joserfc.jwk import import_key

    key = import_key(json.loads(PORTAL_KEY.read_text()))
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + 240,
        "iat": now,
        "jti": jti or str(uuid.uuid4()),
    }
    return jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])


def request_backend_token(
    post_url: str, *, aud: str | None = None, scope: str = SYSTEM_SCOPE, assertion: str | None = None
) -> requests.Response:
    """client_credentials posted to `post_url`, with `assertion` or a new one for `aud` (default post_url)."""
    return requests.post(
        post_url,
        timeout=HTTP_TIMEOUT_S,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or client_assertion(aud or post_url),
        },
    )


def backend_token(facade: Facade, scope: str = SYSTEM_SCOPE) -> str:
    response = request_backend_token(facade.url("/auth/token"), aud=facade.token_url, scope=scope)
    assert response.status_code == 200, f"backend services token refused: {response.status_code} {response.text}"
    return str(response.json()["access_token"])


def search_all(base: str, token: str, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every entry of a search, following `next` links."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    response = requests.get(f"{base}/{path}", params=params, headers=headers, timeout=HTTP_TIMEOUT_S)
    entries: list[dict[str, Any]] = []
    for _ in range(100):
        assert response.status_code == 200, f"{response.url} -> {response.status_code} {response.text[:500]}"
        bundle = response.json()
        entries += bundle.get("entry", [])
        next_url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        if next_url is None:
            return entries
        response = requests.get(next_url, headers=headers, timeout=HTTP_TIMEOUT_S)
    pytest.fail(f"more than 100 pages for {path}?{params}")


# -- the browser --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser_tools() -> dict[str, str]:
    """Node, playwright-core (package.json) and Debian's Chromium; missing ones fail, not skip."""
    node = shutil.which("node")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    missing = []
    if node is None:
        missing.append("node (Node.js 20)")
    if not (ROOT / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append("node_modules/playwright-core (npm ci)")
    if not Path(chromium).is_file():
        missing.append("/usr/bin/chromium (bash scripts/install-system-deps.sh)")
    if missing:
        pytest.fail("browser tests need: " + ", ".join(missing))
    return {"node": str(node), "chromium": chromium}


@pytest.fixture
def drive(browser_tools: dict[str, str], tmp_path: Path) -> Any:
    """drive(url, **args) -> the JSON result of tests/e2e/drive.mjs (Chromium via playwright-core)."""

    def run(url: str, *, timeout_s: float = 90, **args: Any) -> dict[str, Any]:
        profile = tmp_path / f"chromium-profile-{uuid.uuid4().hex[:8]}"
        profile.mkdir()
        payload = {
            "url": url,
            "userDataDir": str(profile),
            "chromium": browser_tools["chromium"],
            "timeoutMs": 20000,
            "totalTimeoutMs": int(timeout_s * 1000),
            **args,
        }
        process = subprocess.Popen(
            [browser_tools["node"], str(ROOT / "tests" / "e2e" / "drive.mjs"), json.dumps(payload)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # node and the Chromium it started
            stdout, stderr = process.communicate(timeout=10)
            pytest.fail(f"drive.mjs did not finish in {timeout_s + 30} s: {stdout!r} {stderr!r}")
        finally:
            with contextlib.suppress(ProcessLookupError):  # what is left of the group (Chromium of a dead node)
                os.killpg(process.pid, signal.SIGKILL)
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        assert lines, f"drive.mjs printed no result (exit {process.returncode}): {stdout} {stderr}"
        result: dict[str, Any] = json.loads(lines[-1])
        ARTIFACTS.mkdir(exist_ok=True)  # the whole result, for whoever reads a failure
        (ARTIFACTS / f"drive-{profile.name}.json").write_text(lines[-1], encoding="utf-8")
        result["exitCode"] = process.returncode
        result["stderr"] = stderr[-3000:]
        return result

    return run
