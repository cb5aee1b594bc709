"""The command line, run as a user runs it (`python -m app ...` as a subprocess): its version, its help,
its one-line errors, and the demo on another port, end to end.

The demo test starts the real `python -m app demo --port P` from this checkout: like `make demo`, it
uses (and, when missing, generates) the repository's demo-data/ and its var/ state, and while it runs
var/demo-server.json names it (the default server of `token`); it removes that record when it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import requests
import yaml

from app import __version__
from app.__main__ import (
    DEMO_POSTMAN_ENVIRONMENT,
    DEMO_SERVER,
    POSTMAN_ENVIRONMENT,
    parser,
    postman_environment,
    served_base_url,
)
from app.auth.server.clients import client_from_config
from app.settings import check_document
from tests.infra import free_port, log_tail, stop_process_group

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
PORTAL_KEY = ROOT / "config" / "demo-keys" / "portal.private.jwk.json"
START_TIMEOUT_S = 180  # the first demo start generates the dataset
NHS = "https://fhir.nhs.uk/Id/nhs-number"


def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without the facade's variables (FACADE_BASE_URL would decide the address)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACADE_", "PROMETHEUS_"))}
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit status non-zero, nothing on stdout, stderr exactly one line (no traceback) naming `expected`."""
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stdout == "", done.stdout
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# -- version and hygiene -----------------------------------------------------------------------------
def test_version_is_written_once() -> None:
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"python -m app {__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "app.__version__"}


def test_changelog_releases_this_version() -> None:
    """Keep a Changelog 1.1.0: an Unreleased section, then the releases newest first, dated; this version's first."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, flags=re.MULTILINE)
    assert headings[0] == ("Unreleased", "")
    assert headings[1] == (__version__, "2026-12-02")
    assert "https://keepachangelog.com/en/1.1.0/" in text
    sections = set(re.findall(r"^### (\w+)$", text, flags=re.MULTILINE))
    assert sections and sections <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(re.findall(r"^\s+\d\. ", text, flags=re.MULTILINE)) >= 9  # every section, not a summary


def test_capability_statement_software_version(client: Any) -> None:
    assert client.get("/fhir/metadata").get_json()["software"] == {"name": "gm-imaging-facade", "version": __version__}


# -- help ----------------------------------------------------------------------------------------------
def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_says_what_it_does_and_its_default() -> None:
    commands = _commands()
    assert set(commands) == {
        "serve",
        "check-config",
        "demo",
        "token",
        "launch",
        "rotate-keys",
        "hash-password",
        "postman-env",
        "nginx-config",
    }
    for name, command in commands.items():
        assert command.description, name
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest}: no description"
            if action.default is not None and action.default != argparse.SUPPRESS:
                assert "%(default)s" in action.help, f"{name} {action.dest}: default not shown"
            elif action.option_strings:
                assert action.required == ("required" in action.help), f"{name} {action.dest}"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("serve", ["--port PORT", "(default: 8080)", "--workers WORKERS", "(default: 2)", "(default: 127.0.0.1)"]),
        ("demo", ["--port PORT", "(default: 8080)"]),
        ("token", ["--base URL", "FACADE_BASE_URL", "--key FILE", "private JWK"]),
        ("launch", ["--config FILE", f"(default: {DEMO_CONFIG})", "--study UID"]),
        ("rotate-keys", ["--retire KID"]),
        ("nginx-config", ["--config FILE", "--ca-bundle FILE", "(default: /etc/ssl/certs/ca-certificates.crt)"]),
    ],
)
def test_help_as_printed(command: str, expected: list[str]) -> None:
    done = run_cli(command, "--help", env=_env(COLUMNS="300"))  # argparse wraps long paths at their hyphens
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for fragment in expected:
        assert fragment in text, done.stdout


# -- one-line errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "--config", "missing.yaml"], ["serve: missing.yaml", "No such file"]),
        (["check-config", "missing.yaml"], ["missing.yaml", "No such file"]),
        (["launch", "--config", "missing.yaml", "--client", "x", "--patient", "9992975962"], ["launch: missing.yaml"]),
        (["rotate-keys", "missing.yaml"], ["rotate-keys: missing.yaml", "No such file"]),
        (["nginx-config", "--config", "missing.yaml"], ["nginx-config: missing.yaml", "No such file"]),
        (
            ["token", "--client", "portal", "--key", "missing.jwk.json", "--scope", "system/Patient.rs"],
            ["token: cannot read the key file missing.jwk.json"],
        ),
        (
            ["token", "--client", "portal", "--key", str(ROOT / "README.md"), "--scope", "system/Patient.rs"],
            ["token:", "is not a private JWK"],
        ),
    ],
)
def test_error_is_one_line(args: list[str], expected: list[str]) -> None:
    assert_one_line_error(run_cli(*args), *expected)


def test_launch_refusal_is_one_line(config_document: dict[str, Any], tmp_path: Path) -> None:
    """The server it builds logs nothing at INFO on the command's stderr: the refusal is the one line."""
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump(config_document), encoding="utf-8")
    done = run_cli("launch", "--config", str(config), "--client", "nobody", "--patient", "9992975962")
    assert_one_line_error(done, "launch: unknown client 'nobody'")


def test_token_from_a_server_that_is_down() -> None:
    base = f"http://127.0.0.1:{free_port()}/fhir"  # nothing listens there
    done = run_cli("token", "--base", base, "--client", "portal", "--key", str(PORTAL_KEY), "--scope", "x")
    assert_one_line_error(done, f"token: no server at {base}", "connection refused", "--base")


def test_serve_on_a_busy_port(busy_port: int, config_document: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump(config_document), encoding="utf-8")
    done = run_cli("serve", "--config", str(config), "--port", str(busy_port))
    assert_one_line_error(done, f"serve: port {busy_port} on 127.0.0.1 is already in use", "--port")


def test_demo_on_a_busy_port(busy_port: int) -> None:
    done = run_cli("demo", "--port", str(busy_port))
    assert_one_line_error(done, f"demo: port {busy_port} on 127.0.0.1 is already in use")


# -- the base URL follows the port ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("configured", "port", "advertised"),
    [
        ("http://127.0.0.1:8080/fhir", 9090, "http://127.0.0.1:9090/fhir"),
        ("http://localhost:8080/fhir", 9090, "http://localhost:9090/fhir"),
        ("http://[::1]:8080/r4/fhir", 9090, "http://[::1]:9090/r4/fhir"),
        ("http://127.0.0.1/fhir", 9090, "http://127.0.0.1:9090/fhir"),
        ("http://127.0.0.1/fhir", 80, "http://127.0.0.1/fhir"),  # the scheme's port, implied
        ("http://127.0.0.1:9090/fhir", 9090, "http://127.0.0.1:9090/fhir"),
        ("https://imaging.example.nhs.uk/fhir", 9090, "https://imaging.example.nhs.uk/fhir"),  # a proxy's address
        ("http://10.1.2.3:8080/fhir", 9090, "http://10.1.2.3:8080/fhir"),
    ],
)
def test_served_base_url(configured: str, port: int, advertised: str) -> None:
    assert served_base_url(configured, port) == advertised


def test_redirect_uri_written_as_a_path_is_on_the_facades_origin() -> None:
    doc = {"client_id": "app", "grant_types": ["authorization_code"], "scope": "openid", "public": True}
    client = client_from_config({**doc, "redirect_uris": ["/apps/x/", "https://other.example/cb"]}, "http://h:9")
    assert client.redirect_uris == ("http://h:9/apps/x/", "https://other.example/cb")
    assert client.check_redirect_uri("http://h:9/apps/x/")
    assert not client.check_redirect_uri("/apps/x/")


def test_demo_configuration_writes_the_sample_apps_origin_nowhere(config_document: dict[str, Any]) -> None:
    """The sample app's redirect URI is a path: its origin is base_url's, written once."""
    timeline = next(c for c in config_document["auth"]["clients"] if c["client_id"] == "imaging-timeline")
    assert timeline["redirect_uris"] == ["/apps/imaging-timeline/"]
    assert check_document(config_document, ROOT) == []
    bad = {**timeline, "redirect_uris": ["apps/imaging-timeline/"]}
    auth = {**config_document["auth"], "clients": [bad]}
    assert any("redirect_uris[0]" in p for p in check_document({**config_document, "auth": auth}, ROOT))


# -- Postman ---------------------------------------------------------------------------------------------
def test_committed_postman_environment_is_the_demos_without_tokens() -> None:
    committed = json.loads(POSTMAN_ENVIRONMENT.read_text(encoding="utf-8"))
    base = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))["base_url"]
    assert committed == postman_environment(base)
    assert all(v["value"] == "" for v in committed["values"] if v["type"] == "secret")


def test_postman_environment_for_another_address() -> None:
    environment = postman_environment("http://127.0.0.1:9090/fhir", access_token="a-token")
    values = {v["key"]: v["value"] for v in environment["values"]}
    assert values["base_url"] == "http://127.0.0.1:9090/fhir"
    assert values["auth_base"] == "http://127.0.0.1:9090/auth"
    assert values["dicomweb_base"] == "http://127.0.0.1:9090/dicomweb"
    assert values["access_token"] == "a-token"
    with pytest.raises(KeyError):
        postman_environment("http://127.0.0.1:9090/fhir", no_such_variable="x")


# -- servers for real ------------------------------------------------------------------------------------
def _start(args: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            cwd=ROOT,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}:\n{log_tail(log, 60)}"
        try:
            if requests.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5).status_code == 200:
                return process
        except requests.RequestException:  # not listening yet, or its workers still loading
            pass
        time.sleep(0.5)
    stop_process_group(process)
    pytest.fail(f"not ready within {START_TIMEOUT_S} s:\n{log_tail(log, 60)}")


def _assert_advertises(port: int) -> None:
    origin = f"http://127.0.0.1:{port}"
    smart = requests.get(f"{origin}/fhir/.well-known/smart-configuration", timeout=30).json()
    assert smart["issuer"] == f"{origin}/fhir"
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        assert smart[key].startswith(f"{origin}/auth/"), smart[key]
    metadata = requests.get(f"{origin}/fhir/metadata", timeout=30).json()
    assert metadata["implementation"]["url"] == f"{origin}/fhir"


@pytest.mark.integration
def test_serve_port_without_base_url_advertises_that_port(config_document: dict[str, Any], tmp_path: Path) -> None:
    assert urlsplit(config_document["base_url"]).port == 8080
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump(config_document), encoding="utf-8")
    port = free_port()
    process = _start(["serve", "--config", str(config), "--port", str(port), "--workers", "1"], port, tmp_path / "log")
    try:
        _assert_advertises(port)
    finally:
        stop_process_group(process)


def _authorize(origin: str, redirect_uri: str) -> requests.Response:
    params = {
        "response_type": "code",
        "client_id": "imaging-timeline",
        "redirect_uri": redirect_uri,
        "scope": "launch/patient patient/*.rs openid fhirUser",
        "state": "s1",
        "aud": f"{origin}/fhir",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    return requests.get(f"{origin}/auth/authorize?{urlencode(params)}", timeout=30, allow_redirects=False)


@pytest.fixture(scope="module")
def demo_on_a_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    assert port != 8080
    process = _start(["demo", "--port", str(port)], port, tmp_path_factory.mktemp("demo") / "demo.log")
    try:
        yield port, process
    finally:
        stop_process_group(process)


@pytest.mark.integration
def test_demo_on_another_port_end_to_end(demo_on_a_port: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, process = demo_on_a_port
    origin = f"http://127.0.0.1:{port}"
    _assert_advertises(port)
    # The sample app's redirect on this port is registered: the sign-in page, not the refusal; the one on the
    # configured file's port is not (the check is real).
    accepted = _authorize(origin, f"{origin}/apps/imaging-timeline/")
    assert accepted.status_code == 200, accepted.text[:500]
    assert "is not registered" not in accepted.text
    refused = _authorize(origin, "http://127.0.0.1:8080/apps/imaging-timeline/")
    assert "The redirect_uri is not registered" in refused.text
    app_page = requests.get(f"{origin}/apps/imaging-timeline/", timeout=30)
    assert app_page.status_code == 200
    # `token` without --base asks this demo (and the token works there).
    done = run_cli("token", "--client", "portal", "--key", str(PORTAL_KEY), "--scope", "system/ImagingStudy.rs")
    assert done.returncode == 0, done.stderr
    found = requests.get(
        f"{origin}/fhir/ImagingStudy",
        params={"patient.identifier": f"{NHS}|9992975962"},
        headers={"Authorization": f"Bearer {done.stdout.strip()}"},
        timeout=30,
    )
    assert found.status_code == 200, found.text[:500]
    assert found.json()["total"] > 0
    assert json.loads(DEMO_SERVER.read_text())["base_url"] == f"{origin}/fhir"
    # A refused token: the server's OAuth error in one line.
    refused_token = run_cli("token", "--client", "portal", "--key", str(PORTAL_KEY), "--scope", "system/Nothing.rs")
    assert_one_line_error(refused_token, f"token: token request refused by {origin}/auth/token: 400 invalid_scope")
    unknown = run_cli("token", "--client", "nobody", "--key", str(PORTAL_KEY), "--scope", "system/ImagingStudy.rs")
    assert_one_line_error(unknown, "token: token request refused", "invalid_client")
    # The Postman environment written for this demo names its port.
    written = {v["key"]: v["value"] for v in json.loads(DEMO_POSTMAN_ENVIRONMENT.read_text())["values"]}
    assert written["base_url"] == f"{origin}/fhir"
    assert written["auth_base"] == f"{origin}/auth"
    assert DEMO_POSTMAN_ENVIRONMENT.stat().st_mode & 0o077 == 0
    # A second demo on the same port: one line, and the first one is untouched.
    assert_one_line_error(run_cli("demo", "--port", str(port)), f"demo: port {port} on 127.0.0.1 is already in use")
    assert process.poll() is None
    # Stopped, the demo is no longer `token`'s default.
    stop_process_group(process)
    assert not DEMO_SERVER.exists()
    down = run_cli("token", "--client", "portal", "--key", str(PORTAL_KEY), "--scope", "system/Patient.rs")
    assert f"{origin}/" not in down.stderr


def _worker_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", log.read_text(errors="replace"))]


@pytest.mark.integration
def test_a_worker_leaving_keeps_the_servers_metrics_folder(config_document: dict[str, Any], tmp_path: Path) -> None:
    """gunicorn's workers are forked inside `serve` and leave through its frames: one that exits (here on SIGTERM,
    as after max_requests) must not remove the folder the master and the other workers share (it did)."""
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump(config_document), encoding="utf-8")
    port, log = free_port(), tmp_path / "log"
    process = _start(["serve", "--config", str(config), "--port", str(port), "--workers", "2"], port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(folders := set(re.findall(r"metrics multiprocess in ([^ ,\"]+)", log.read_text()))) != 1:
            assert time.monotonic() < deadline, log_tail(log, 60)
            time.sleep(0.3)
        folder = Path(folders.pop())
        first = _worker_pids(log)[0]
        os.kill(first, signal.SIGTERM)
        while len(_worker_pids(log)) < 3:  # the master has replaced it
            assert time.monotonic() < deadline, log_tail(log, 60)
            time.sleep(0.3)
        assert f"Worker exiting (pid: {first})" in log.read_text()  # through the frames of `serve`
        assert folder.is_dir(), f"{folder} removed when worker {first} left"
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).status_code == 200
    finally:
        stop_process_group(process)
    assert not folder.exists()  # the master, at its end, removes it


def test_readme_commands_are_the_parsers() -> None:
    """Every `python -m app ...` of the README's shell blocks names a command and options that exist, and the
    venv's python (a user who has not activated the venv can paste it)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = _commands()
    blocks = "\n".join(re.findall(r"^```sh\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL))
    lines = re.findall(r"([\w./]*python) -m app (.*)$", blocks, flags=re.MULTILINE)
    assert len(lines) >= 8
    for python, rest in lines:
        assert python == ".venv/bin/python", f"{python} -m app {rest}: say which python (the venv's)"
        name = rest.split()[0]
        if name == "--version":
            continue
        assert name in commands, rest
        known = {o for a in commands[name]._actions for o in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--[a-z-]+)", rest.split("#")[0]):
            assert option in known, f"{rest}: {option} is not an option of {name}"
    assert re.search(r"^FACADE_CONFIG=\S+ \.venv/bin/gunicorn .*wsgi:app", blocks, flags=re.MULTILINE)


# -- nginx-config ----------------------------------------------------------------------------------------
def test_nginx_config_prints_one_relay_location_per_http_archive(
    config_document: dict[str, Any], tmp_path: Path
) -> None:
    """Folder archives keep the Python relay (no location); a DICOMweb archive gets its internal location,
    with its TLS options; nginx itself accepts the output (tests/gateway/test_gateway_nginx.py runs it)."""
    doc = json.loads(json.dumps(config_document))
    doc["gateway"] = {"relay": "nginx"}
    doc["trusts"][1]["archive"] = {
        "type": "dicomweb",
        "url": "https://pacs.example.org:8443/dicom-web",
        "tls": {
            "ca_bundle": "/etc/facade/pacs-ca.pem",
            "client_cert": "/etc/facade/c.pem",
            "client_key": "/etc/facade/c.key",
        },
    }
    for name in ("pacs-ca.pem", "c.pem", "c.key"):  # check-config wants the files to exist
        (tmp_path / name).write_text("x")
        doc["trusts"][1]["archive"]["tls"] = {
            k: str(tmp_path / Path(v).name) for k, v in doc["trusts"][1]["archive"]["tls"].items()
        }
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    done = run_cli("nginx-config", "--config", str(config))
    assert done.returncode == 0, done.stderr
    trust = doc["trusts"][1]["id"]
    assert re.findall(r"^location \^~ /_gateway/relay/([a-z0-9-]+)/ \{$", done.stdout, flags=re.M) == [trust]
    assert "proxy_pass https://pacs.example.org:8443/dicom-web/;" in done.stdout
    assert f"proxy_ssl_trusted_certificate {tmp_path / 'pacs-ca.pem'};" in done.stdout
    assert f"proxy_ssl_certificate {tmp_path / 'c.pem'};" in done.stdout
    assert f"proxy_ssl_certificate_key {tmp_path / 'c.key'};" in done.stdout
    assert "proxy_ssl_verify on;" in done.stdout and "proxy_pass_request_headers off;" in done.stdout
    assert re.search(r"^set \$gateway_relay_key '[0-9a-f]{64}';$", done.stdout, flags=re.M)
    assert done.stderr == ""
    doc["gateway"] = {"relay": "python"}
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    python = run_cli("nginx-config", "--config", str(config))
    assert python.returncode == 0 and "gateway.relay is 'python'" in python.stderr
