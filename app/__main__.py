"""GM imaging FHIR facade: serve it, check a configuration, run the demo, get tokens and launch ids, manage keys.

Every command prints its errors as one line on stderr (no traceback) and exits non-zero.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app import __version__
from app.core import systems
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, ConfigError, check_document, load_settings, read_document

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
DEMO_DATA = ROOT / "demo-data"
DEMO_STATE = ROOT / "var"  # config/demo.yaml keeps its audit, keys and auth state here too
# Written by `demo` while it runs: the base URL it serves, the default server of `token`.
DEMO_SERVER = DEMO_STATE / "demo-server.json"
# The committed Postman environment (token-free, the demo's default address) and the one `demo` writes for its own.
POSTMAN_ENVIRONMENT = ROOT / "postman" / "demo.postman_environment.json"
DEMO_POSTMAN_ENVIRONMENT = DEMO_STATE / "demo.postman_environment.json"
DEMO_KEY = DEMO_CONFIG.parent / "demo-keys" / "portal.private.jwk.json"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# prometheus_client reads it when first imported (app.telemetry.metrics): this module must not import that first.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HTTP_TIMEOUT_S = 10


def fail(command: str, message: str, status: int = 1) -> int:
    """One line on stderr, `<command>: <message>`; the exit status to return."""
    print(f"{command}: {' '.join(message.split())}", file=sys.stderr)
    return status


def config_failure(command: str, error: ConfigError) -> int:
    """A configuration that cannot be used: one line for one problem, else the list."""
    if len(error.problems) == 1:
        return fail(command, f"{error.source}: {error.problems[0]}")
    print(f"{command}: {error}", file=sys.stderr)
    return 1


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def served_base_url(configured: str, port: int) -> str:
    """The base URL a server listening on `port` advertises: the configured one, unless that names a loopback
    address (this machine, no proxy in between) on another port; then the same URL on `port`. A base URL on
    any other host is a proxy's or load balancer's public address and is kept as it is (FACADE_BASE_URL, when
    set, wins over both: `serve` does not call this then)."""
    parts = urlsplit(configured)
    host = parts.hostname
    if host is None or not _is_loopback(host):
        return configured
    if (parts.port or {"http": 80, "https": 443}.get(parts.scheme)) == port:
        return configured
    authority = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, f"{authority}:{port}", parts.path, parts.query, parts.fragment))


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port (in use, not allowed), or None. Checked before any banner,
    so that a busy port is one clear line rather than gunicorn's retries and tracebacks."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"cannot listen on {host}:{port}: {error.strerror}"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds: TIME_WAIT is no obstacle
        try:
            sock.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another server?): choose another with --port"
            return f"cannot listen on {host}:{port}: {error.strerror}"
    return None


def check_config(path: str) -> int:
    """Print every problem of a configuration file; exit 0 only when there is none."""
    file = Path(path)
    try:
        problems = check_document(read_document(file), file.resolve().parent)
    except ConfigError as error:
        problems = error.problems
    if len(problems) == 1:
        print(f"{path}: {problems[0]}", file=sys.stderr)
        return 1
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
        return config_failure("serve", error)
    problem = listen_problem(host, port)
    if problem:
        return fail("serve", problem)
    # The base URL names this server: on loopback, the port it listens on (the configured one's port may be
    # another); FACADE_BASE_URL, when set, is used as it is. The workers read it from the environment.
    if not os.environ.get(BASE_URL_ENV) and served_base_url(settings.base_url, port) != settings.base_url:
        os.environ[BASE_URL_ENV] = served_base_url(settings.base_url, port)
        settings = load_settings(config)
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
            from app import serving_app

            return serving_app(load_settings(config))

    from app.telemetry.logs import configure_logging

    configure_logging("INFO")  # the same JSON lines as gunicorn's and the workers'
    logging.getLogger("app").info("FHIR base URL: %s", settings.base_url)
    master = os.getpid()
    try:
        FacadeServer().run()
    finally:
        # gunicorn's workers are forked from here and leave by SystemExit through this frame too: only the
        # master, at its end, removes what the whole server shares.
        if metrics_dir is not None and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def demo(host: str, port: int) -> int:
    """Serve config/demo.yaml, its dataset generated on first use. Everything it prints and writes names the
    address it serves: the base URL, the sample app, the Postman environment and `token`'s default server."""
    problem = listen_problem(host, port)
    if problem:
        return fail("demo", problem)
    from tools.demo.generate import ensure_demo_data

    if ensure_demo_data(DEMO_DATA):
        print(f"generated the demo dataset in {DEMO_DATA}")
    try:
        configured = load_settings(DEMO_CONFIG).base_url
    except ConfigError as error:
        return config_failure("demo", error)
    base = configured if os.environ.get(BASE_URL_ENV) else served_base_url(configured, port)
    os.environ[BASE_URL_ENV] = base  # what serve advertises, the same in every worker
    origin = _origin(base)
    DEMO_STATE.mkdir(parents=True, exist_ok=True)
    write_postman_environment(DEMO_POSTMAN_ENVIRONMENT, base)
    owner = os.getpid()
    DEMO_SERVER.write_text(json.dumps({"base_url": base, "pid": owner}) + "\n", encoding="utf-8")
    print(
        f"\nGM imaging FHIR facade {__version__} (demo) at {base}\n"
        f"Every call needs a SMART token. Get one as the shared care record portal (`token` asks this server\n"
        f"while the demo runs), then search:\n"
        f"  TOKEN=$(.venv/bin/python -m app token --client portal --key {DEMO_KEY.relative_to(ROOT)} "
        f"--scope 'system/ImagingStudy.rs system/Endpoint.rs system/Patient.rs')\n"
        f'  curl -s -H "Authorization: Bearer $TOKEN" \'{base}/ImagingStudy?patient.identifier='
        f"{systems.NHS_NUMBER}|{_first_demo_patient()}&_include=ImagingStudy:endpoint'\n"
        f"The sample SMART app (standalone launch; user dr.khan, password imaging-demo):\n"
        f"  {origin}/apps/imaging-timeline/\n"
        f"The EHR launch simulator: {origin}/apps/launcher/\n"
        f"Postman: import postman/gm-imaging-facade.postman_collection.json and, for this address,\n"
        f"  {DEMO_POSTMAN_ENVIRONMENT.relative_to(ROOT)}\n"
        f"Postman/newman without a browser (fresh demo tokens): .venv/bin/python -m app postman-env\n",
        flush=True,
    )
    try:
        return serve(str(DEMO_CONFIG), host, port, workers=2, threads=8)
    finally:
        if _running_demo() == base and os.getpid() == owner:  # not in an exiting worker; not another demo's record
            DEMO_SERVER.unlink(missing_ok=True)


def _origin(base_url: str) -> str:
    """Scheme and authority of a base URL (where /auth, /apps and /dicomweb are)."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def _first_demo_patient() -> str:
    manifest = json.loads((DEMO_DATA / "manifest.json").read_text())
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


def postman_environment(fhir_base: str, **values: str) -> dict[str, Any]:
    """The demo's Postman environment for a facade at `fhir_base`: the committed one (token-free, written for
    config/demo.yaml's address) with its three addresses derived from `fhir_base`, and `values` set by key
    (e.g. access_token=...: the environment's other variables; an unknown key is refused)."""
    environment: dict[str, Any] = json.loads(POSTMAN_ENVIRONMENT.read_text(encoding="utf-8"))
    origin = _origin(fhir_base)
    values = {
        "base_url": fhir_base.rstrip("/"),
        "auth_base": f"{origin}/auth",
        "dicomweb_base": f"{origin}/dicomweb",
    } | values
    known = {variable["key"]: variable for variable in environment["values"]}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise KeyError(f"not variables of {POSTMAN_ENVIRONMENT.name}: {', '.join(unknown)}")
    for key, value in values.items():
        known[key]["value"] = value
    return environment


def write_postman_environment(path: Path, fhir_base: str, **values: str) -> None:
    """postman_environment() written to `path`, readable by its owner only (it may carry tokens)."""
    text = json.dumps(postman_environment(fhir_base, **values), indent=2) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)  # an older, wider file narrowed


def _running_demo() -> str | None:
    """The base URL of the demo running from this checkout (var/demo-server.json, while its process lives)."""
    try:
        record = json.loads(DEMO_SERVER.read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)
        return str(record["base_url"])
    except (OSError, ValueError, KeyError, TypeError):  # none, unreadable, or its process gone
        return None


def default_base() -> str:
    """`token`'s server when --base is not given: $FACADE_BASE_URL, else the running demo's, else config/demo.yaml's."""
    found = os.environ.get(BASE_URL_ENV) or _running_demo()
    if found:
        return found
    try:
        return str(read_document(DEMO_CONFIG)["base_url"])
    except (ConfigError, KeyError, TypeError):
        return f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/fhir"


def _http_reason(error: Exception) -> str:
    """A short reason for a failed HTTP exchange: the socket's error (connection refused, name unknown) or a
    timeout, found along the exception chain requests and urllib3 build."""
    import requests

    if isinstance(error, requests.Timeout):
        return f"no answer within {HTTP_TIMEOUT_S} s"
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "reason", None)
    return type(error).__name__


def _oauth_refusal(response: Any) -> str:
    """An OAuth error answer in one line: status, error and its description (else the body, cut)."""
    try:
        body = response.json()
        detail = ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
    except (ValueError, AttributeError):
        detail = ""
    return f"{response.status_code} {detail or response.text[:200]}"


def token(base: str | None, client: str, key_file: str, scope: str) -> int:
    """SMART Backend Services against a running server: discovery, signed assertion, token on stdout."""
    import time
    import uuid

    import requests
    from joserfc import jwt
    from joserfc.jwk import import_key

    base = (base or default_base()).rstrip("/")
    try:
        key = import_key(json.loads(Path(key_file).read_text(encoding="utf-8")))
    except OSError as error:
        return fail("token", f"cannot read the key file {key_file}: {error.strerror}")
    except Exception as error:  # joserfc refuses a malformed key with several kinds of error
        return fail("token", f"{key_file} is not a private JWK (JSON): {error}")
    if not key.is_private:
        return fail("token", f"{key_file} is a public key: the client's private JWK is needed to sign")
    discovery_url = f"{base}/.well-known/smart-configuration"
    try:
        discovery = requests.get(discovery_url, timeout=HTTP_TIMEOUT_S)
    except requests.RequestException as error:
        return fail("token", f"no server at {base} ({_http_reason(error)}): start it, or name another with --base")
    try:
        token_url = discovery.json()["token_endpoint"] if discovery.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        token_url = None
    if not isinstance(token_url, str):
        return fail(
            "token",
            f"{discovery_url} answered {discovery.status_code} without a token_endpoint: is {base} "
            "the FHIR base URL of a SMART server? (--base)",
        )
    alg = "ES384" if key.key_type == "EC" else "RS384"
    now = int(time.time())
    assertion = jwt.encode(
        {"alg": alg, "kid": key.kid, "typ": "JWT"},
        {"iss": client, "sub": client, "aud": token_url, "exp": now + 240, "iat": now, "jti": str(uuid.uuid4())},
        key,
        algorithms=[alg],
    )
    try:
        response = requests.post(
            token_url,
            timeout=HTTP_TIMEOUT_S,
            data={
                "grant_type": "client_credentials",
                "scope": scope,
                "client_assertion": assertion,
                "client_assertion_type": systems.JWT_BEARER_ASSERTION,
            },
        )
    except requests.RequestException as error:
        return fail("token", f"no answer from {token_url} ({_http_reason(error)})")
    if response.status_code != 200:
        return fail("token", f"token request refused by {token_url}: {_oauth_refusal(response)}")
    try:
        print(response.json()["access_token"])
    except (ValueError, KeyError, TypeError):
        return fail("token", f"{token_url} answered 200 without an access_token")
    return 0


def launch(config: str, client: str, patient: str, study: str | None) -> int:
    """An EHR launch id for a client and patient, written straight into the server's store."""
    from app import create_app
    from app.web.components import components

    logging.getLogger("app").setLevel(logging.WARNING)  # a command prints its result; the server's notes are noise
    try:
        app = create_app(load_settings(config))
    except ConfigError as error:
        return config_failure("launch", error)
    server = components(app).auth_server
    if server is None:
        return fail("launch", "needs auth.mode: embedded")
    problem = f"unknown client {client!r}" if client not in server.clients else None
    problem = problem or server.launch_context_problem(patient, study)
    if problem:
        return fail("launch", problem)
    found = server.create_launch(client, patient, study)
    print(found["launch"])
    return 0


def rotate_keys(config: str, retire: str | None = None) -> int:
    """A new signing key (the others stay published), or with `retire` one key removed. A running
    server's workers pick the change up within seconds (app/auth/server/keys.py): no restart.

    Exit 0 done; 1 configuration, missing file or unknown kid; 2 refused (the current or only key)."""
    from app.auth.server.keys import RetireRefused, SigningKeys, UnknownKey
    from app.settings import EmbeddedAuthSettings

    try:
        auth = load_settings(config).auth
    except ConfigError as error:
        return config_failure("rotate-keys", error)
    if not isinstance(auth, EmbeddedAuthSettings):
        return fail("rotate-keys", "needs auth.mode: embedded")
    path = auth.signing_keys
    if retire is None:
        try:
            kid = SigningKeys(path).rotate()
        except OSError as error:
            return fail("rotate-keys", f"cannot write {path}: {error.strerror}")
        print(f"new signing key {kid}; the previous keys stay published until retired (--retire KID)")
        return 0
    if not path.exists():  # retiring must not create a key file
        return fail("rotate-keys", f"no signing keys file at {path}")
    try:
        left = SigningKeys(path).retire(retire)
    except UnknownKey as error:
        return fail("rotate-keys", str(error))
    except RetireRefused as error:
        return fail("rotate-keys", f"refused: {error}", 2)
    except OSError as error:
        return fail("rotate-keys", f"cannot write {path}: {error.strerror}")
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


def nginx_config(config: str, ca_bundle: str) -> int:
    """Print the image gateway's nginx include (gateway.relay: nginx) for a configuration."""
    from app.web import accel

    try:
        settings = load_settings(config)
    except ConfigError as error:
        return config_failure("nginx-config", error)
    print(accel.nginx_config(settings, ca_bundle), end="")
    if settings.gateway_relay != "nginx":
        print(
            f"nginx-config: {config}: gateway.relay is {settings.gateway_relay!r}: the facade will not hand "
            "retrievals to nginx until it is 'nginx'",
            file=sys.stderr,
        )
    return 0


def parser() -> argparse.ArgumentParser:
    """Every command and option, each with what it does and its default."""
    top = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def listen(command: argparse.ArgumentParser) -> None:
        command.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)")
        command.add_argument(
            "--port",
            type=int,
            default=DEFAULT_PORT,
            help="TCP port to listen on (default: %(default)s); a base URL on a loopback address follows it, "
            f"unless ${BASE_URL_ENV} is set",
        )

    s = sub.add_parser(
        "serve",
        help="serve the FHIR API for a configuration file (gunicorn)",
        description="Serve the FHIR API, the authorization server and the sample app with gunicorn (gthread workers).",
    )
    s.add_argument("--config", required=True, metavar="FILE", help="the configuration file (YAML or JSON); required")
    listen(s)
    s.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default: %(default)s)")
    s.add_argument("--threads", type=int, default=8, help="threads per worker (default: %(default)s)")

    c = sub.add_parser(
        "check-config",
        help="validate a configuration file and print every problem",
        description="Validate a configuration file; print every problem, exit 1 if there is any.",
    )
    c.add_argument("file", help="the configuration file (YAML or JSON)")

    d = sub.add_parser(
        "demo",
        help="serve the embedded demo archives (generating them if missing)",
        description="Serve config/demo.yaml on HOST:PORT: base URL, SMART discovery, the sample app's redirect, "
        "var/demo.postman_environment.json and `token`'s default server all name that port.",
    )
    listen(d)

    t = sub.add_parser(
        "token",
        help="get a backend services access token from a running server",
        description="SMART Backend Services: sign a client assertion with the client's private key and print the "
        "access token the server's token endpoint issues.",
    )
    t.add_argument("--client", required=True, metavar="ID", help="the registered client id (e.g. portal); required")
    t.add_argument("--key", required=True, metavar="FILE", help="the client's private JWK (JSON file); required")
    t.add_argument("--scope", required=True, help="the scopes asked for, space-separated; required")
    t.add_argument(
        "--base",
        metavar="URL",
        help=f"FHIR base URL of the server (default: ${BASE_URL_ENV}, else the demo running from this checkout, "
        f"else config/demo.yaml's base_url; now {default_base()})",
    )

    la = sub.add_parser(
        "launch",
        help="create an EHR launch id (embedded authorization server)",
        description="Create a single-use EHR launch id for a client and patient in the server's store.",
    )
    la.add_argument(
        "--config", default=str(DEMO_CONFIG), metavar="FILE", help="configuration file (default: %(default)s)"
    )
    la.add_argument("--client", required=True, metavar="ID", help="the client that will be launched; required")
    la.add_argument("--patient", required=True, metavar="NHS_NUMBER", help="the launch's patient; required")
    la.add_argument("--study", metavar="UID", help="a StudyInstanceUID of that patient for fhirContext (default: none)")

    r = sub.add_parser(
        "rotate-keys",
        help="add a new signing key (the previous ones stay published), or --retire one",
        description="Add a new signing key to the configuration's signing_keys file, or retire one; running "
        "servers pick the change up without a restart. Exit 2 when a retirement is refused.",
    )
    r.add_argument("config", help="the configuration file (auth.mode: embedded)")
    r.add_argument(
        "--retire",
        metavar="KID",
        help="remove this key (not the current one) from the file and the JWKS (default: none)",
    )

    h = sub.add_parser(
        "hash-password",
        help="hash a password or client secret for the configuration",
        description="Print the scrypt hash of a secret, for a user's password_hash or a client's client_secret_hash.",
    )
    h.add_argument("secret", help="the password or client secret")

    pe = sub.add_parser(
        "postman-env",
        help="write a local Postman environment with fresh demo tokens (demo only)",
        description="Mint fresh demo tokens (user, patient, system, audit) from a running demo and write them, "
        "with its base URLs, into a git-ignored Postman environment for `newman run`.",
    )
    pe.add_argument(
        "--config", default=str(DEMO_CONFIG), metavar="FILE", help="the demo configuration (default: %(default)s)"
    )
    pe.add_argument(
        "--base",
        metavar="URL",
        help=f"FHIR base URL of the running demo (default: the demo running from this checkout, else "
        f"config/demo.yaml's base_url; now {default_base()})",
    )
    pe.add_argument(
        "--out",
        metavar="FILE",
        help="where to write (default: postman/local.postman_environment.json, git-ignored)",
    )

    n = sub.add_parser(
        "nginx-config",
        help="print the image gateway's nginx locations (gateway.relay: nginx)",
        description="Print the nginx include (server context) that lets nginx relay the image gateway's bytes: "
        "the relay key nginx marks the facade's requests with, one internal location per trust archive "
        "served over HTTP (X-Accel-Redirect target: the archive's URL, TLS options, timeouts) and the "
        "OperationOutcome bodies of archive errors. Include it in the server block of "
        "deploy/nginx.template.conf; it holds a key derived from the cursor secret: keep it private.",
    )
    n.add_argument("--config", required=True, metavar="FILE", help="the configuration file (YAML or JSON); required")
    n.add_argument(
        "--ca-bundle",
        default="/etc/ssl/certs/ca-certificates.crt",
        metavar="FILE",
        help="CA certificates nginx verifies an https archive with when its tls has no ca_bundle, as a path "
        "on nginx's machine (default: %(default)s)",
    )
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:  # Ctrl-C: the usual status, no traceback
        return 130


def run(args: argparse.Namespace) -> int:
    if args.command == "postman-env":
        return postman_env(args.config, args.base or default_base(), args.out)
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
    if args.command == "nginx-config":
        return nginx_config(args.config, args.ca_bundle)
    if args.command == "serve":
        return serve(args.config, args.host, args.port, args.workers, args.threads)
    if args.command == "check-config":
        return check_config(args.file)
    return demo(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
