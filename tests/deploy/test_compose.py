"""deploy/compose.yaml, checked statically (no container engine here): valid against the vendored Compose
Specification schema, and consistent with the one facade template and the one nginx template that the
native proof (test_multi_instance.py) runs: the committed renderings are the templates rendered with
compose.yaml's `x-template-values`, every host there is a service of the file, every port one that
service listens on, and every environment variable the rendered configuration names is set."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from app.settings import check_document
from tests.deploy.support import COMPOSE_FILE, COMPOSE_SCHEMA, DEPLOY, render

SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"  # deploy/schemas/README.md
FACADES = ("facade-1", "facade-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def values(compose) -> dict[str, str]:
    return {k: str(v) for k, v in compose["x-template-values"].items()}


@pytest.fixture(scope="module")
def facade_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose" / "facade.yaml").read_text())


def _validator() -> Any:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def test_the_vendored_schema_is_the_noted_version():
    assert hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA_SHA256 in (DEPLOY / "schemas" / "README.md").read_text()


def test_compose_file_is_valid_against_the_compose_specification(compose):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(compose)]
    assert errors == []
    # The validator does refuse what the specification does not allow.
    broken = copy.deepcopy(compose)
    broken["services"]["nginx"]["restart_policy"] = "always"  # a deploy key, not a service key
    broken["services"]["redis"]["healthcheck"]["interval"] = 5  # a duration is a string
    assert len(list(_validator().iter_errors(broken))) >= 2


def test_committed_renderings_are_the_templates_with_the_compose_values(values):
    assert render.main(["--check"]) == 0, "run python deploy/render.py"
    asked = render.placeholders(render.FACADE_TEMPLATE) | render.placeholders(render.NGINX_TEMPLATE)
    assert asked == set(values), "every value is used by a template and every placeholder has a value"
    # Hosts and ports only: every value is a host name or a port.
    for name, value in values.items():
        assert name.endswith(("_HOST", "_PORT")), name
        if name.endswith("_PORT"):
            assert value.isdigit(), (name, value)


def _listens(service: dict[str, Any]) -> set[str]:
    ports = {str(p) for p in service.get("expose", [])}
    ports |= {str(p).split(":")[-1] for p in service.get("ports", [])}
    return ports


def test_every_templated_host_is_a_service_listening_on_its_port(compose, values):
    services = compose["services"]
    pairs = {name.removesuffix("_HOST") for name in values if name.endswith("_HOST")} - {"PUBLIC"}
    assert pairs == {"FACADE_A", "FACADE_B", "BOLTON", "CHRISTIE", "MFT", "POSTGRES", "REDIS"}
    for pair in pairs:
        host, port = values[f"{pair}_HOST"], values[f"{pair}_PORT"]
        assert host in services, f"{pair}_HOST={host} is not a service"
        assert port in _listens(services[host]), f"{host} does not expose {port}"
    for facade, pair in zip(FACADES, ("FACADE_A", "FACADE_B"), strict=True):
        assert values[f"{pair}_HOST"] == facade
        bind = services[facade]["environment"]["FACADE_BIND"]
        assert bind == f"0.0.0.0:{values[f'{pair}_PORT']}", "gunicorn listens where nginx sends"
    # nginx: published on the public port, listening on LISTEN_PORT, with the rendered configuration.
    nginx = services["nginx"]
    assert nginx["ports"] == [f"{values['PUBLIC_PORT']}:{values['LISTEN_PORT']}"]
    assert values["PUBLIC_HOST"] in ("127.0.0.1", "localhost")
    assert "./compose/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert set(nginx["depends_on"]) == set(FACADES)


def _env_references(text: str) -> set[str]:
    """Variables the configuration names: ${NAME} in paths, and *_env keys of secrets."""
    return set(re.findall(r"\$\{(\w+)\}", text)) | set(re.findall(r"(?:password|token|client_secret)_env: (\w+)", text))


def test_the_facades_get_the_configuration_and_every_variable_it_names(compose, values, facade_config):
    services = compose["services"]
    rendered = (DEPLOY / "compose" / "facade.yaml").read_text()
    needed = _env_references(rendered) | {"PGPASSWORD", "FACADE_CURSOR_SECRET"}
    assert {"FACADE_SEED_DIR", "FACADE_STATE_DIR", "CHRISTIE_ARCHIVE_PASSWORD"} <= needed
    for facade in FACADES:
        service = services[facade]
        env = service["environment"]
        assert needed <= set(env), f"{facade} misses {needed - set(env)}"
        assert f"./compose/facade.yaml:{env['FACADE_CONFIG']}:ro" in service["volumes"]
        assert f"facade-keys:{env['FACADE_STATE_DIR']}" in service["volumes"], "one key file for both"
        assert f"seed:{env['FACADE_SEED_DIR']}:ro" in service["volumes"]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert service["build"]["target"] == "runtime"
        assert service["depends_on"]["loader"] == {"condition": "service_completed_successfully"}
    assert services["facade-1"] == services["facade-2"], "two replicas of one definition"
    # PostgreSQL: the user and database of the configuration's URLs, the password the facades give libpq.
    postgres = services["postgres"]["environment"]
    for url in (facade_config["audit"]["url"], facade_config["auth"]["store"]):
        parts = urlsplit(url)
        assert (parts.username, parts.path.lstrip("/")) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
        assert parts.password is None, "no password in the configuration"
    assert services["facade-1"]["environment"]["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]
    store = urlsplit(facade_config["ops"]["rate_limit"]["store"])
    assert (store.hostname, str(store.port)) == (values["REDIS_HOST"], values["REDIS_PORT"])


def test_the_loader_seeds_each_configured_trust_archive(compose, facade_config):
    services = compose["services"]
    loader = services["loader"]
    assert loader["build"]["target"] == "demo", "the demo image carries the dataset generator"
    command = loader["command"]
    assert command[:2] == ["python", "/opt/seed/seed_archives.py"]
    seeded = dict(arg.split("=", 1) for arg in command[3:])
    configured = {t["id"]: t["archive"]["url"].removesuffix("/dicom-web") for t in facade_config["trusts"]}
    assert seeded == configured
    assert f"seed:{command[2]}" in loader["volumes"]
    for trust in facade_config["trusts"]:
        service = services[urlsplit(trust["archive"]["url"]).hostname]
        env = service["environment"]
        assert service["image"].startswith("orthancteam/orthanc:")
        assert env["DICOM_WEB_PLUGIN_ENABLED"] == "true"
        basic = trust["archive"].get("auth", {"type": "none"})
        if basic["type"] == "basic":
            assert env["ORTHANC__AUTHENTICATION_ENABLED"] == "true"
            variable = basic["password_env"]
            users = env["ORTHANC__REGISTERED_USERS"]
            assert f'"{basic["username"]}": "${{{variable}:-' in users
            assert loader["environment"][variable] == services["facade-1"]["environment"][variable]
            assert loader["environment"][variable] in users
        else:
            assert env["ORTHANC__AUTHENTICATION_ENABLED"] == "false"
    styles = {t["nhs_number"]["match"] for t in facade_config["trusts"]}
    assert styles == {"patient_id", "xref"}


def test_the_rendered_configuration_is_valid(facade_config, tmp_path, monkeypatch):
    (tmp_path / "xref.csv").write_text("nhs_number,trust,local_patient_id,issuer\n")
    monkeypatch.setenv("FACADE_SEED_DIR", str(tmp_path))
    monkeypatch.setenv("FACADE_STATE_DIR", str(tmp_path))
    assert check_document(facade_config, DEPLOY / "compose") == []
    assert facade_config["ops"]["trusted_proxies"] == 1


def test_nginx_retries_idempotent_requests_on_the_other_instance():
    text = (DEPLOY / "compose" / "nginx.conf").read_text()
    retry = re.search(r"proxy_next_upstream ([^;]+);", text)
    assert retry is not None
    assert {"error", "timeout", "http_502"} <= set(retry.group(1).split())
    assert "non_idempotent" not in retry.group(1), "a POST is never sent twice"
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text


def test_render_refuses_a_missing_value(tmp_path: Path):
    with pytest.raises(KeyError):
        render.render(render.FACADE_TEMPLATE, {"PUBLIC_HOST": "127.0.0.1"})
