"""Shared fixtures: the demo dataset, the demo configuration pointed at it, the app and a client.

Everything is session-scoped: the dataset (~1,100 DICOM files, real-sized images) is generated
once per generator version and reused (tests/demo_dataset.py), indexing it at start-up takes
seconds, and no test changes them. The `client` validates every FHIR resource the
API returns (tests/fhir_validation.py) and refuses a 500 or a non-FHIR-JSON response, so each
test checks those properties without saying so.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `import app` whatever directory pytest is started from
    sys.path.insert(0, str(ROOT))

from demo_dataset import demo_dataset  # noqa: E402
from smart_tokens import system_token  # noqa: E402

from app import create_app  # noqa: E402
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, Settings, settings_from_document  # noqa: E402

try:  # pytest "prepend" import mode puts tests/ on sys.path (no __init__.py)
    from fhir_validation import validate_resource
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]

DEMO_CONFIG = ROOT / "config" / "demo.yaml"
BASE_URL = "http://127.0.0.1:8080/fhir"
CURSOR_SECRET = "test-cursor-secret-0123456789abcdef"
FHIR_JSON = "application/fhir+json"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: starts real servers (gunicorn) as subprocesses")


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The demo dataset (deterministic: default seed), generated once per generator version."""
    return demo_dataset()


@pytest.fixture(scope="session")
def manifest(demo_data: Path) -> dict[str, Any]:
    """manifest.json of the dataset: patients, studies and the "facts" naming the special cases."""
    return json.loads((demo_data / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def config_document(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """config/demo.yaml with absolute paths to the generated data, its own keys, state and audit
    files, and a fixed cursor secret. Authorization is the demo's: the embedded SMART server."""
    state = tmp_path_factory.mktemp("state")
    doc = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    doc["patient_xref"] = str(demo_data / "xref.csv")
    for trust in doc["trusts"]:
        trust["archive"]["path"] = str(demo_data / trust["id"])
    doc["cursor_secret"] = CURSOR_SECRET
    doc["audit"] = {"path": str(state / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(state / "signing-keys.json")
    doc["auth"]["store"] = f"sqlite:{state / 'auth-state.sqlite'}"
    return doc


@pytest.fixture(scope="session")
def settings(config_document: dict[str, Any], demo_data: Path) -> Settings:
    # The environment may override the base URL and the secret: keep it out of the fixture.
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BASE_URL_ENV, raising=False)
        env.delenv(CURSOR_SECRET_ENV, raising=False)
        return settings_from_document(copy.deepcopy(config_document), demo_data, "tests/demo")


@pytest.fixture(scope="session")
def app(settings: Settings):
    return create_app(settings)


class FhirClient:
    """app.test_client() that checks every response: no 500, FHIR JSON, a valid FHIR resource.

    Requests carry a system-scoped token unless the test sends its own Authorization header.
    """

    TOKEN_REUSE_S = 200  # backend tokens live 300 s; a long session must not send an expired one

    def __init__(self, app) -> None:
        self._app = app
        self._client = app.test_client()
        self._token = system_token(app)
        self._minted = time.monotonic()

    @property
    def token(self) -> str:
        if time.monotonic() - self._minted > self.TOKEN_REUSE_S:
            self._token, self._minted = system_token(self._app), time.monotonic()
        return self._token

    def open(self, *args: Any, **kwargs: Any):
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Authorization", f"Bearer {self.token}")
        response = self._client.open(*args, headers=headers, **kwargs)
        where = f"{kwargs.get('method', 'GET')} {args[0] if args else kwargs.get('path')}"
        assert response.status_code != 500, f"{where} -> 500: {response.get_data(as_text=True)[:2000]}"
        assert response.mimetype == FHIR_JSON, f"{where} -> Content-Type {response.content_type!r}"
        body = response.get_json()
        if isinstance(body, dict) and "resourceType" in body:
            validate_resource(body)
        return response

    def get(self, *args: Any, **kwargs: Any):
        return self.open(*args, method="GET", **kwargs)

    def post(self, *args: Any, **kwargs: Any):
        return self.open(*args, method="POST", **kwargs)

    def put(self, *args: Any, **kwargs: Any):
        return self.open(*args, method="PUT", **kwargs)

    def delete(self, *args: Any, **kwargs: Any):
        return self.open(*args, method="DELETE", **kwargs)


@pytest.fixture(scope="session")
def client(app) -> FhirClient:
    return FhirClient(app)
