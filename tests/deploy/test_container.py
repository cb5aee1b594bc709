"""The Dockerfile, checked statically (nothing can build or run an image on this machine): parsed with
dockerfile-parse, its stages and what each one copies, runs as and declares.

What this cannot show, and stays unproven until an image is built: that the base image and the pip
install work, that the HEALTHCHECK command succeeds in the container, and that the demo target's first
start serves the demo. The file sets are checked here instead: a tree holding only what the runtime
stage copies runs `check-config` and imports the app, and one holding what the demo stage adds, with its
links into a stand-in volume, serves the demo by the stage's own CMD.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]  # no stubs published

from tests.demo_dataset import demo_dataset
from tests.deploy.support import DOCKERFILE, DOCKERIGNORE, ROOT
from tests.infra import free_port, log_tail, stop_process_group

STATE_VOLUME = "/var/lib/facade"
RUNTIME_SOURCES = {"requirements.txt", "app/", "mappings/", "wsgi.py"}  # the runtime image's own files
FORBIDDEN = ("tests", "bench", "tools", "config", "demo-data", "var", "scripts", "node_modules", ".venv")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == instruction]

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """(from stage or None, sources, destination) of each COPY."""
        out = []
        for value in self.values("COPY"):
            words = shlex.split(value)
            origin = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            out.append((origin, paths[:-1], paths[-1]))
        return out

    def env(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for value in self.values("ENV"):
            for word in shlex.split(value):
                name, _, setting = word.partition("=")
                found[name] = setting
        return found


def stages() -> dict[str, Stage]:
    parser = DockerfileParser(str(DOCKERFILE))
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for item in parser.structure:
        kind, value = item["instruction"], item["value"]
        if kind == "FROM":
            words = value.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"every stage is named: FROM {value}"
            current = found[words[2]] = Stage(words[2], words[0])
        elif current is not None and kind != "COMMENT":
            current.instructions.append((kind, value))
    return found


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, Stage]:
    return stages()


def test_stages_build_runtime_and_demo(dockerfile):
    assert list(dockerfile) == ["build", "runtime", "demo"]
    assert dockerfile["demo"].base == "runtime", "the demo is the runtime image plus the demo's files"
    assert dockerfile["runtime"].base == dockerfile["build"].base == "${PYTHON_IMAGE}"


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for our file: the last matching pattern wins; `!` re-includes."""
    ignored = False
    parts = Path(path.rstrip("/")).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatch(prefix, bare) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile):
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    checked = 0
    for stage in dockerfile.values():
        for origin, sources, _dest in stage.copies():
            if origin is not None:
                assert origin in dockerfile, f"COPY --from={origin}: no such stage"
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"{stage.name}: COPY {source}: not in the repository"
                assert not _ignored(source, patterns), f"{stage.name}: COPY {source}: excluded by .dockerignore"
                checked += 1
    assert checked >= 8
    # And .dockerignore keeps local state and test material out of the context.
    for path in ("var/demo-audit.sqlite", "demo-data/manifest.json", "tests/conftest.py", ".venv/bin/python"):
        assert _ignored(path, patterns), path


def test_runtime_carries_only_the_app_and_its_requirements(dockerfile):
    runtime = dockerfile["runtime"]
    own = {source for origin, sources, _ in runtime.copies() if origin is None for source in sources}
    assert own == RUNTIME_SOURCES - {"requirements.txt"}
    from_build = [(sources, dest) for origin, sources, dest in runtime.copies() if origin == "build"]
    assert from_build == [(["/opt/facade-venv"], "/opt/facade-venv")], "only the virtual environment"
    build = dockerfile["build"]
    assert [sources for origin, sources, _ in build.copies()] == [["requirements.txt"]]
    assert "requirements.txt" in " ".join(build.values("RUN")), "the build stage installs the runtime requirements"
    assert "requirements-dev" not in " ".join(build.values("RUN") + runtime.values("RUN"))
    for stage in (build, runtime):
        for _origin, sources, _dest in stage.copies():
            for source in sources:
                assert source.rstrip("/").split("/")[0] not in FORBIDDEN, f"{stage.name} copies {source}"


def test_demo_adds_its_configuration_keys_and_generator_only(dockerfile):
    demo = dockerfile["demo"]
    added = {source for origin, sources, _ in demo.copies() for source in sources}
    assert added == {
        "config/demo.yaml",
        "config/demo-keys/",
        "tools/__init__.py",
        "tools/demo/",
        "postman/demo.postman_environment.json",  # the demo writes one for its address from it
    }
    assert yaml.safe_load((ROOT / "config/demo.yaml").read_text())["demo"] is True
    # config/demo.yaml keeps its generated data and keys beside config/: the demo links both into the volume.
    document = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    assert document["patient_xref"].startswith("../demo-data/")
    assert document["auth"]["signing_keys"].startswith("../var/")
    links = " ".join(demo.values("RUN"))
    assert f"ln -s {STATE_VOLUME}/demo-data demo-data" in links and f"ln -s {STATE_VOLUME}/var var" in links
    command = json.loads(demo.values("CMD")[-1])
    assert "python -m app demo --host 0.0.0.0 --port 8080" in command[-1]
    assert f"mkdir -p {STATE_VOLUME}/demo-data {STATE_VOLUME}/var" in command[-1]
    assert demo.env()["FACADE_BASE_URL"] == "http://127.0.0.1:8080/fhir"


@pytest.mark.parametrize("name", ["runtime", "demo"])
def test_runs_as_a_non_root_user(dockerfile, name):
    users = dockerfile[name].values("USER") or dockerfile["runtime"].values("USER")
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), f"{name} runs as {users[-1]}"
    assert "useradd --system --uid 10001" in " ".join(dockerfile["runtime"].values("RUN"))


@pytest.mark.parametrize("name", ["runtime", "demo"])
def test_healthcheck_asks_readyz(dockerfile, name):
    checks = dockerfile[name].values("HEALTHCHECK")
    assert checks, f"{name} has no HEALTHCHECK"
    assert "/readyz" in checks[-1] and "CMD" in checks[-1]


def test_state_volume_and_read_only_root(dockerfile):
    runtime = dockerfile["runtime"]
    assert json.loads(runtime.values("VOLUME")[-1]) == [STATE_VOLUME]
    env = runtime.env()
    assert env["FACADE_STATE_DIR"] == STATE_VOLUME
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "no .pyc written next to the code"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/"), "the only writable path besides the volume"


def test_gunicorn_settings_come_from_the_environment(dockerfile):
    runtime = dockerfile["runtime"]
    env = runtime.env()
    command = json.loads(runtime.values("CMD")[-1])
    assert command[:2] == ["sh", "-c"] and command[2].startswith("exec gunicorn ")
    for option, variable in (("--bind", "FACADE_BIND"), ("--workers", "FACADE_WORKERS"),
                             ("--threads", "FACADE_THREADS"), ("--timeout", "FACADE_TIMEOUT")):  # fmt: skip
        assert f'{option} "${variable}"' in command[2]
        assert env[variable], f"{variable} has a default in the image"
    assert "-c python:app.ops.gunicorn_conf" in command[2] and command[2].endswith("wsgi:app")
    # No control socket under $HOME (the state volume, shared by compose's replicas).
    assert "--no-control-socket" in command[2]


def _tree(dockerfile: dict[str, Stage], names: list[str], into: Path) -> Path:
    """The files the named stages copy from the build context, laid out under their WORKDIR."""
    for name in names:
        for origin, sources, dest in dockerfile[name].copies():
            if origin is not None:
                continue
            for source in sources:
                path = ROOT / source
                target = into / path.name if dest in ("./", ".") else into / dest.rstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                if path.is_dir():
                    shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(path, target)
    return into


def test_the_runtime_file_set_serves_and_refuses_the_demo_credentials(dockerfile, tmp_path):
    """Only what the runtime stage copies: the app imports and `check-config` runs from it; a configuration
    with the demo's published key and no cursor secret is refused there unless it says demo: true."""
    tree = _tree(dockerfile, ["runtime"], tmp_path / "srv")
    assert sorted(p.name for p in tree.iterdir()) == ["app", "mappings", "wsgi.py"]
    document = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    document["trusts"] = document["trusts"][:1]
    (tmp_path / "data" / "bolton").mkdir(parents=True)
    document["trusts"][0]["archive"]["path"] = str(tmp_path / "data" / "bolton")
    document.pop("patient_xref")
    document["audit"]["path"] = str(tmp_path / "audit.sqlite")
    document["auth"]["signing_keys"] = str(tmp_path / "keys.json")
    document["auth"]["store"] = f"sqlite:{tmp_path / 'auth.sqlite'}"
    env = {k: v for k, v in os.environ.items() if k not in ("FACADE_CURSOR_SECRET", "FACADE_BASE_URL", "PYTHONPATH")}

    def check(doc: dict) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "facade.yaml"
        path.write_text(yaml.safe_dump(doc))
        return subprocess.run(
            [sys.executable, "-m", "app", "check-config", str(path)],
            cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    demo = check(document)
    assert demo.returncode == 0, demo.stderr
    production = check({**document, "demo": False})
    assert production.returncode == 1
    assert "cursor_secret: required unless demo: true" in production.stderr
    assert "is the demo's key" in production.stderr and "the demo password" in production.stderr
    imported = subprocess.run(
        [sys.executable, "-c", "import app, wsgi"],
        cwd=tree, env={**env, "FACADE_CONFIG": str(tmp_path / "facade.yaml")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert imported.returncode != 0 and "cursor_secret" in imported.stderr, (
        "wsgi.py (the runtime CMD's app) refuses the demo credentials outside demo mode"
    )


def test_the_demo_file_set_serves_the_demo_from_its_volume(dockerfile, tmp_path):
    """The demo stage's files (runtime + demo copies), its links into the volume and its CMD, run natively
    with the volume at a temporary folder, on a free loopback port instead of 0.0.0.0:8080: the demo
    answers /readyz, the FHIR base and the sample app, and has written its keys into the volume."""
    tree = _tree(dockerfile, ["runtime", "demo"], tmp_path / "srv")
    volume = tmp_path / "volume"
    volume.mkdir()
    for link in ("demo-data", "var"):
        (tree / link).symlink_to(volume / link)
    shutil.copytree(demo_dataset(), volume / "demo-data")  # what the first start generates (tools/demo)
    port = free_port()
    command = json.loads(dockerfile["demo"].values("CMD")[-1])[2]
    command = command.replace(STATE_VOLUME, str(volume)).replace(
        "--host 0.0.0.0 --port 8080", f"--host 127.0.0.1 --port {port}"
    )
    command = command.replace("exec python ", f"exec {sys.executable} ")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACADE_", "PROMETHEUS_")) and k != "PYTHONPATH"}
    env["FACADE_BASE_URL"] = f"http://127.0.0.1:{port}/fhir"
    log = (tmp_path / "demo.log").open("wb")
    process = subprocess.Popen(
        ["sh", "-c", command], cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        origin = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_tail(tmp_path / "demo.log")
            try:
                if requests.get(f"{origin}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log_tail(tmp_path / "demo.log")
            time.sleep(0.3)
        discovery = requests.get(f"{origin}/fhir/.well-known/smart-configuration", timeout=10)
        assert discovery.status_code == 200 and discovery.json()["token_endpoint"] == f"{origin}/auth/token"
        assert requests.get(f"{origin}/apps/imaging-timeline/", timeout=10).status_code == 200
        assert (volume / "var" / "demo-signing-keys.json").is_file(), "the keys are created in the volume"
    finally:
        stop_process_group(process, timeout=20)
        log.close()
