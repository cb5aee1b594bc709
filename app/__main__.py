"""Command line: `python -m app {serve,check-config,demo}`."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.core import systems
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, ConfigError, check_document, load_settings, read_document

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
DEMO_DATA = ROOT / "demo-data"
# prometheus_client reads it when first imported (app.telemetry.metrics): this module must not import that first.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def check_config(path: str) -> int:
    """Print every problem of a configuration file; exit 0 only when there is none."""
    file = Path(path)
    try:
        problems = check_document(read_document(file), file.resolve().parent)
    except ConfigError as error:
        problems = error.problems
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


def serve(config: str, host: str, port: int, workers: int, threads: int) -> int:
    """Serve with gunicorn (gthread workers): a production server, never Flask's debug server."""
    from gunicorn.app.base import BaseApplication

    try:
        settings = load_settings(config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    # Every worker must sign paging cursors with the same key, or a `next` link breaks. In demo mode, with
    # no key given, one is made for this server's workers; outside it a key is required (the start-up
    # refuses a missing one), and a configured key is never replaced.
    if settings.demo and not os.environ.get(CURSOR_SECRET_ENV) and not read_document(Path(config)).get("cursor_secret"):
        os.environ[CURSOR_SECRET_ENV] = secrets.token_urlsafe(32)
    # Several workers answer /metrics alike only in prometheus_client's multiprocess mode, which must
    # be chosen before any worker imports it: a fresh folder per start, removed at the end.
    metrics_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="facade-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    from app.ops import gunicorn_conf

    class FacadeServer(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 60)
            self.cfg.set("logconfig_dict", gunicorn_conf.logconfig_dict)  # JSON; no access log with queries
            self.cfg.set("on_starting", gunicorn_conf.on_starting)
            self.cfg.set("child_exit", gunicorn_conf.child_exit)

        def load(self) -> Any:
            from app import create_app

            return create_app(load_settings(config))

    from app.telemetry.logs import configure_logging

    configure_logging("INFO")  # the same JSON lines as gunicorn's and the workers'
    logging.getLogger("app").info("FHIR base URL: %s", settings.base_url)
    try:
        FacadeServer().run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def demo(host: str, port: int) -> int:
    from tools.demo.generate import ensure_demo_data

    if ensure_demo_data(DEMO_DATA):
        print(f"generated the demo dataset in {DEMO_DATA}")
    base = f"http://{host}:{port}/fhir"
    key = DEMO_CONFIG.parent / "demo-keys" / "portal.private.jwk.json"
    print(
        f"\nGM imaging FHIR facade (demo) at {base}\n"
        f"Every call needs a SMART token. Get one as the shared care record portal, then search:\n"
        f"  TOKEN=$(.venv/bin/python -m app token --base {base} --client portal --key {key.relative_to(ROOT)} "
        f"--scope 'system/ImagingStudy.rs system/Endpoint.rs system/Patient.rs')\n"
        f'  curl -s -H "Authorization: Bearer $TOKEN" \'{base}/ImagingStudy?patient.identifier='
        f"{systems.NHS_NUMBER}|{_first_demo_patient()}&_include=ImagingStudy:endpoint'\n"
        f"The sample SMART app (standalone launch; user dr.khan, password imaging-demo):\n"
        f"  http://{host}:{port}/apps/imaging-timeline/\n"
        f"The EHR launch simulator: http://{host}:{port}/apps/launcher/\n"
        f"Postman/newman without a browser: .venv/bin/python -m app postman-env --base {base}\n",
        flush=True,
    )
    os.environ.setdefault(BASE_URL_ENV, base)
    return serve(str(DEMO_CONFIG), host, port, workers=2, threads=8)


def _first_demo_patient() -> str:
    import json

    manifest = json.loads((DEMO_DATA / "manifest.json").read_text())
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


def token(base: str, client: str, key_file: str, scope: str) -> int:
    """SMART Backend Services against a running server: discovery, signed assertion, token."""
    import json
    import time
    import uuid

    import requests
    from joserfc import jwt
    from joserfc.jwk import import_key

    discovery = requests.get(f"{base.rstrip('/')}/.well-known/smart-configuration", timeout=10)
    discovery.raise_for_status()
    token_url = discovery.json()["token_endpoint"]
    key = import_key(json.loads(Path(key_file).read_text()))
    alg = "ES384" if key.key_type == "EC" else "RS384"
    now = int(time.time())
    assertion = jwt.encode(
        {"alg": alg, "kid": key.kid, "typ": "JWT"},
        {"iss": client, "sub": client, "aud": token_url, "exp": now + 240, "iat": now, "jti": str(uuid.uuid4())},
        key,
        algorithms=[alg],
    )
    response = requests.post(
        token_url,
        timeout=10,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion": assertion,
            "client_assertion_type": systems.JWT_BEARER_ASSERTION,
        },
    )
    if response.status_code != 200:
        print(f"token request refused ({response.status_code}): {response.text}", file=sys.stderr)
        return 1
    print(response.json()["access_token"])
    return 0


def launch(config: str, client: str, patient: str, study: str | None) -> int:
    """An EHR launch id for a client and patient, written straight into the server's store."""
    from app import create_app
    from app.web.components import components

    app = create_app(load_settings(config))
    server = components(app).auth_server
    if server is None:
        print("launch needs auth.mode: embedded", file=sys.stderr)
        return 1
    problem = f"unknown client {client!r}" if client not in server.clients else None
    problem = problem or server.launch_context_problem(patient, study)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    found = server.create_launch(client, patient, study)
    print(found["launch"])
    return 0


def rotate_keys(config: str, retire: str | None = None) -> int:
    """A new signing key (the others stay published), or with `retire` one key removed. A running
    server's workers pick the change up within seconds (app/auth/server/keys.py): no restart.

    Exit 0 done; 1 configuration, missing file or unknown kid; 2 refused (the current or only key)."""
    from app.auth.server.keys import RetireRefused, SigningKeys, UnknownKey
    from app.settings import EmbeddedAuthSettings

    auth = load_settings(config).auth
    if not isinstance(auth, EmbeddedAuthSettings):
        print("rotate-keys needs auth.mode: embedded", file=sys.stderr)
        return 1
    path = auth.signing_keys
    if retire is None:
        kid = SigningKeys(path).rotate()
        print(f"new signing key {kid}; the previous keys stay published until retired (--retire KID)")
        return 0
    if not path.exists():  # retiring must not create a key file
        print(f"rotate-keys: no signing keys file at {path}", file=sys.stderr)
        return 1
    try:
        left = SigningKeys(path).retire(retire)
    except UnknownKey as error:
        print(f"rotate-keys: {error}", file=sys.stderr)
        return 1
    except RetireRefused as error:
        print(f"rotate-keys: refused: {error}", file=sys.stderr)
        return 2
    print(f"retired key {retire}; published keys: {', '.join(left)}")
    return 0


def postman_env(config: str, base: str, out: str | None) -> int:
    from app.web import postman_env as pe

    try:
        path = pe.write(load_settings(config), base, Path(out) if out else pe.LOCAL)
    except (ConfigError, pe.NotTheDemo) as error:
        print(f"postman-env: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {path} (tokens for {base}); run: npx newman run {pe.TEMPLATE.parent.name}/"
        f"gm-imaging-facade.postman_collection.json -e {path}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the FHIR API for a configuration file")
    s.add_argument("--config", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--threads", type=int, default=8)
    c = sub.add_parser("check-config", help="validate a configuration file and print every problem")
    c.add_argument("file")
    d = sub.add_parser("demo", help="serve the embedded demo archives (generating them if missing)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    t = sub.add_parser("token", help="get a backend services access token from a running server")
    t.add_argument("--client", required=True)
    t.add_argument("--key", required=True, help="the client's private JWK (JSON file)")
    t.add_argument("--scope", required=True)
    t.add_argument("--base", default="http://127.0.0.1:8080/fhir", help="FHIR base URL of the server")
    la = sub.add_parser("launch", help="create an EHR launch id (embedded authorization server)")
    la.add_argument("--config", default=str(DEMO_CONFIG))
    la.add_argument("--client", required=True)
    la.add_argument("--patient", required=True, help="NHS number")
    la.add_argument("--study", help="StudyInstanceUID for fhirContext")
    r = sub.add_parser("rotate-keys", help="add a new signing key (the previous ones stay published), or --retire one")
    r.add_argument("config")
    r.add_argument("--retire", metavar="KID", help="remove this key (not the current one) from the file and the JWKS")
    h = sub.add_parser("hash-password", help="hash a password or client secret for the configuration")
    h.add_argument("secret")
    pe = sub.add_parser("postman-env", help="write a local Postman environment with fresh demo tokens (demo only)")
    pe.add_argument("--config", default=str(DEMO_CONFIG))
    pe.add_argument("--base", default="http://127.0.0.1:8080/fhir", help="FHIR base URL of the running demo")
    pe.add_argument("--out", default=None, help="default: postman/local.postman_environment.json (git-ignored)")
    args = parser.parse_args(argv)
    if args.command == "postman-env":
        return postman_env(args.config, args.base, args.out)
    if args.command == "token":
        return token(args.base, args.client, args.key, args.scope)
    if args.command == "launch":
        return launch(args.config, args.client, args.patient, args.study)
    if args.command == "rotate-keys":
        return rotate_keys(args.config, args.retire)
    if args.command == "hash-password":
        from app.auth.server.clients import hash_secret

        print(hash_secret(args.secret))
        return 0
    if args.command == "serve":
        return serve(args.config, args.host, args.port, args.workers, args.threads)
    if args.command == "check-config":
        return check_config(args.file)
    return demo(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
