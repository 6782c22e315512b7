"""The Kubernetes manifests, checked offline: both overlays render, every object validates
(built-in kinds strictly, custom resources against ../shared/crds, the Serve config against
Ray's schema), the policies hold, and each validator is seen rejecting a broken manifest."""

from __future__ import annotations

import copy
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import k8s_checks as k8s
from newsfeed.cli import app

pytestmark = pytest.mark.skipif(k8s.KUBECTL is None, reason="kubectl not installed (kustomize renders the overlays)")


@pytest.fixture(scope="module")
def schemas():
    if not k8s.CRDS.is_dir():
        pytest.skip(f"CRD schemas not found at {k8s.CRDS} (../shared beside the repo)")
    return k8s.crd_schemas()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: k8s.render(k8s.K8S / "overlays" / overlay) for overlay in k8s.OVERLAYS}


def by_name(docs: list[dict]) -> dict[str, dict]:
    return {k8s.name(doc): doc for doc in docs}


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_object_of_the_overlay_validates_and_meets_the_policies(rendered, schemas, overlay):
    docs = rendered[overlay]
    kinds = {doc["kind"] for doc in docs}
    assert {"RayService", "RayCluster", "FeatureStore", "Deployment", "CronJob", "Job", "NetworkPolicy",
            "PodDisruptionBudget", "Service", "PersistentVolumeClaim"} <= kinds
    assert sum(len(k8s.pod_specs(doc)) for doc in docs) >= 8  # the policies had pods to look at
    assert k8s.all_errors(docs, schemas) == []


def test_the_overlays_differ_where_they_should(rendered):
    local, prod = by_name(rendered["local"]), by_name(rendered["prod"])
    assert "StatefulSet/newsfeed-postgres" in local and "Deployment/newsfeed-redis" in local
    assert not any(name.endswith(("postgres", "redis")) for name in prod if name.split("/")[0] != "NetworkPolicy")
    assert "HorizontalPodAutoscaler/newsfeed-mlflow" in prod
    workers = [by["RayService/newsfeed-feed"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"]
               for by in (local, prod)]
    assert workers == [1, 12]
    clocks = [by["ConfigMap/newsfeed-config"]["data"]["NEWSFEED_CLOCK"] for by in (local, prod)]
    assert clocks == ["auto", "wall"]  # production serves wall-clock time; the local cluster may replay data
    for docs in rendered.values():
        assert all(doc["kind"] != "Secret" for doc in docs)  # named by the pods, created by the operator
        assert "ConfigMap/newsfeed-serve-config" not in by_name(docs)  # local-config: only the replacement's source


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_rayservice_runs_the_serve_config_newsfeed_serve_build_writes(rendered, overlay, tmp_path):
    folder = k8s.K8S / "overlays" / overlay
    args = shlex.split((folder / "serve-build-args").read_text())
    result = CliRunner().invoke(app, ["serve", *args, "build", "-o", str(tmp_path / "serve.yaml")])
    assert result.exit_code == 0, result.output
    built = yaml.safe_load((tmp_path / "serve.yaml").read_text())
    assert yaml.safe_load((folder / "serve-config.yaml").read_text()) == built, \
        f"k8s/overlays/{overlay}/serve-config.yaml is stale: run `make k8s-serve-config`"
    service = by_name(rendered[overlay])["RayService/newsfeed-feed"]
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == built


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_ray_pod_starts_with_the_ingress_newsfeed_serve_uses(rendered, overlay):
    """The HAProxy ingress is chosen by environment variables every Ray process reads at start
    (serving/ingress.py): each Ray pod of the RayService gets them, and HAProxy can write its
    config and socket as non-root on a read-only root (a writable /tmp)."""
    from serving.ingress import DEFAULT_INGRESS, ingress_env

    docs = by_name(rendered[overlay])
    config = docs["ConfigMap/newsfeed-config"]["data"]
    assert {k: config.get(k) for k in ingress_env(DEFAULT_INGRESS)} == ingress_env(DEFAULT_INGRESS)
    cluster = docs["RayService/newsfeed-feed"]["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert {"configMapRef": {"name": "newsfeed-config"}} in container["envFrom"]
            assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
            tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in volumes[tmp["name"]]


def test_each_validator_rejects_a_broken_manifest(rendered, schemas):
    docs = by_name(rendered["prod"])
    service = copy.deepcopy(docs["RayService/newsfeed-feed"])
    service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}  # typo
    assert any("rayStartParam" in e for e in k8s.custom_errors(service, schemas))

    store = copy.deepcopy(docs["FeatureStore/newsfeed"])
    store["spec"]["services"]["onlineStore"]["persistence"]["store"]["type"] = "rediss"
    assert any("rediss" in e for e in k8s.custom_errors(store, schemas))

    mlflow = copy.deepcopy(docs["Deployment/newsfeed-mlflow"])
    del mlflow["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert k8s.policy_errors(mlflow) == ["Deployment/newsfeed-mlflow container mlflow: no limits for cpu, memory"]

    typo = copy.deepcopy(docs["Deployment/newsfeed-mlflow"])
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert any("readinesProbe" in e for e in k8s.builtin_errors(typo))

    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    config["applications"][0]["deployments"][0]["max_ongoing_request"] = 10
    broken = copy.deepcopy(docs["RayService/newsfeed-feed"])
    broken["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    assert any("max_ongoing_request" in e for e in k8s.serve_config_errors(broken))

    root = copy.deepcopy(docs["CronJob/newsfeed-drift"])
    pod = root["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["securityContext"]["runAsNonRoot"] = False
    pod["containers"][0]["image"] = "ghcr.io/newsfeed-platform/newsfeed:latest"
    problems = k8s.policy_errors(root)
    assert any("root" in p for p in problems) and any("pinned" in p for p in problems)
    assert k8s.policy_errors({"kind": "Secret", "metadata": {"name": "x"}, "stringData": {"token": "t"}})


def test_crd_defaults_are_applied_before_validation(schemas):
    schema = schemas[("ray.io/v1", "RayService")]
    body = {"spec": {"upgradeStrategy": {"type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": {
        "gatewayClassName": "istio", "intervalSeconds": 30, "stepSizePercent": 10}}}}
    filled = k8s.with_defaults(body, schema)
    assert filled["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["maxSurgePercent"] == 100


def test_no_secret_with_data_anywhere_in_the_repo():
    """Every YAML file git tracks, not only what the overlays render."""
    listed = subprocess.run(["git", "ls-files", "*.yaml", "*.yml"], cwd=k8s.ROOT, capture_output=True, text=True)
    paths = [k8s.ROOT / line for line in listed.stdout.splitlines()] if listed.returncode == 0 else \
        sorted(k8s.K8S.rglob("*.yaml"))
    assert any(p.parts[-3:-1] == ("k8s", "base") for p in paths)  # the manifests were among them
    found = []
    for path in paths:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        except yaml.YAMLError:
            continue
        found += [f"{path}: {k8s.name(d)}" for d in docs if d.get("kind") == "Secret" and (d.get("data") or
                                                                                           d.get("stringData"))]
    assert found == []


def test_the_image_runs_as_a_non_root_user_from_a_pinned_base():
    dockerfile = (k8s.ROOT / "Dockerfile").read_text()
    base = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))
    assert k8s.PINNED.match(base), base
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in {"0", "root"}
    referenced = {c["image"] for docs in [k8s.render(k8s.K8S / "overlays" / "prod")] for d in docs
                  for pod in k8s.pod_specs(d) for c in pod["containers"]}
    assert referenced == {"ghcr.io/newsfeed-platform/newsfeed:0.1.0"}
    assert Path(k8s.ROOT / ".dockerignore").read_text().count(".venv")


def test_the_pipeline_steps_find_what_the_manifests_create(rendered):
    """The compiled pipeline mounts a volume and reads a ConfigMap and a Secret by name: the
    manifests must create the first two with the keys it reads, and their pods must name the third."""
    from pipelines import training_pipeline as tp

    for docs in rendered.values():
        objects = by_name(docs)
        assert f"PersistentVolumeClaim/{tp.HOME_VOLUME}" in objects
        config = objects[f"ConfigMap/{tp.CONFIG_MAP}"]["data"]
        assert set(tp.CONFIG_ENV) <= set(config)
        assert not set(tp.SECRET_ENV.values()) & set(config)  # credentials never in the ConfigMap
        referenced = {(ref["name"], ref["key"]) for doc in docs for pod in k8s.pod_specs(doc)
                      for c in pod["containers"] for env in c.get("env", [])
                      for ref in [env.get("valueFrom", {}).get("secretKeyRef")] if ref}
        assert {(tp.SECRET, key) for key in tp.SECRET_ENV} <= referenced
