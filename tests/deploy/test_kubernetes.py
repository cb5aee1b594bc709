"""deploy/k8s/: every manifest valid (strict: no unknown field) against the OpenAPI schemas of a pinned
Kubernetes version, bundled in kubernetes-validate (offline); and what the issue asks of them: two
replicas with readiness /readyz and liveness /healthz, resources, non-root, read-only root filesystem,
topology spread, an HPA and a PDB, the configuration from the ConfigMap, every secret it names from a
Secret, and egress limited to the archives, the patient index, PostgreSQL, Redis and DNS."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]  # no py.typed
import pytest
import yaml

from app.settings import check_document
from tests.deploy.support import K8S

KUBERNETES_VERSION = "1.33.0"  # the release the manifests are written for (schemas bundled offline)
KINDS = {"ConfigMap", "Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
         "NetworkPolicy"}  # fmt: skip


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    found = {doc["kind"]: doc for _path, doc in _documents()}
    assert set(found) == KINDS
    return found


@pytest.fixture(scope="module")
def config(manifests) -> dict[str, Any]:
    return yaml.safe_load(manifests["ConfigMap"]["data"]["facade.yaml"])


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifest_is_valid_for_the_pinned_kubernetes_version(path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_an_invalid_manifest(manifests):
    broken = yaml.safe_load(yaml.safe_dump(manifests["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(manifests["Deployment"]))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_deployment_runs_two_hardened_replicas_with_probes(manifests):
    deployment = manifests["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert deployment["spec"]["replicas"] == 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == selector
    # The only writable paths: /tmp and the state volume (the image's VOLUME), both emptyDir.
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", "/var/lib/facade"}


def test_service_ingress_hpa_and_pdb_select_the_deployment(manifests):
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    port = _container(manifests["Deployment"])["ports"][0]
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests["Service"]["spec"]["ports"][0]["targetPort"] == port["name"]
    backend = manifests["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == manifests["Service"]["metadata"]["name"]
    assert manifests["Ingress"]["spec"]["tls"], "TLS at the ingress"
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == manifests["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests["PodDisruptionBudget"]["spec"]["minAvailable"] >= 1


def _secret_variables(config: dict[str, Any]) -> set[str]:
    text = yaml.safe_dump(config)
    return set(re.findall(r"(?:password|token|client_secret)_env: (\w+)", text)) | {
        "PGPASSWORD",
        "FACADE_CURSOR_SECRET",
    }


def test_configuration_comes_from_the_configmap_and_secrets_from_secrets(manifests, config):
    deployment = manifests["Deployment"]
    container = _container(deployment)
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_mount = next(n for n, v in volumes.items() if "configMap" in v)
    assert volumes[config_mount]["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
    assert env["FACADE_CONFIG"]["value"] == f"{mounts[config_mount]['mountPath']}/facade.yaml"
    for variable in _secret_variables(config):
        assert "secretKeyRef" in env[variable]["valueFrom"], f"{variable} must come from a Secret"
    keys_file = Path(config["auth"]["signing_keys"])
    keys_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(keys_file.parent))
    assert "secret" in volumes[keys_mount["name"]] and keys_mount["readOnly"] is True
    assert config.get("demo", False) is False, "production: demo credentials and a missing secret are refused"
    assert "users" not in config["auth"], "no demo users"


def test_the_configuration_is_valid_for_the_facade(config, monkeypatch, tmp_path):
    for variable in _secret_variables(config):
        monkeypatch.setenv(variable, "from-a-secret-0123456789")
    assert check_document(config, tmp_path) == []
    assert config["ops"]["trusted_proxies"] == 1


def test_egress_goes_only_to_the_archives_index_postgresql_redis_and_dns(manifests, config):
    policy = manifests["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ports = sorted(port["port"] for rule in policy["egress"] for port in rule["ports"])
    upstreams = [t["archive"]["url"] for t in config["trusts"]] + [config["patient_index"]["url"]]
    expected = sorted(
        {urlsplit(u).port or (443 if u.startswith("https") else 80) for u in upstreams}
        | {urlsplit(config["audit"]["url"]).port, urlsplit(config["ops"]["rate_limit"]["store"]).port}
    )
    assert sorted(set(ports) - {53}) == expected, "one rule per kind of upstream the configuration names"
    assert ports.count(53) == 2, "DNS over UDP and TCP"
    archive_rule = next(r for r in policy["egress"] if len(r["to"]) == len(config["trusts"]))
    assert all("ipBlock" in peer for peer in archive_rule["to"])
    assert not any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for r in policy["egress"] for peer in r["to"])
