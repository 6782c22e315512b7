"""Offline checks of the Kubernetes manifests (no API server runs on the development or CI
machines): render an overlay with kustomize, validate built-in kinds with
kubernetes-validate --strict, custom resources against their CRDs' schemas (defaults applied
first, unknown fields rejected, as the API server does), the RayService's Serve config against
Ray's schema, and the platform's policies. Each check returns its problems as sentences."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("local", "prod")
CRDS = ROOT.parent / "shared" / "crds"
KUBECTL = shutil.which("kubectl")
POD_PATHS = {  # where each kind keeps its pod specs
    "Deployment": [("spec", "template", "spec")], "StatefulSet": [("spec", "template", "spec")],
    "Job": [("spec", "template", "spec")], "CronJob": [("spec", "jobTemplate", "spec", "template", "spec")],
    "RayCluster": [("spec", "headGroupSpec", "template", "spec"), ("spec", "workerGroupSpecs", "*", "template", "spec")],
    "RayService": [("spec", "rayClusterConfig", "headGroupSpec", "template", "spec"),
                   ("spec", "rayClusterConfig", "workerGroupSpecs", "*", "template", "spec")],
}


def render(folder: Path) -> list[dict]:
    """``kubectl kustomize folder``: the manifests an apply would send."""
    done = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"kustomize {folder}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def name(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# -- built-in kinds ----------------------------------------------------------------------------

def is_custom(doc: dict, schemas: dict) -> bool:
    """Of a group some CRD defines (anything else goes to kubernetes-validate, which fails on
    a kind it does not know rather than skipping it)."""
    return doc.get("apiVersion", "").split("/")[0] in {api.split("/")[0] for api, _ in schemas}


def builtin_errors(doc: dict) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{name(doc)}: {err.message} (at {'.'.join(map(str, err.path))})"]
    return []


# -- custom resources against their CRDs -------------------------------------------------------

def crd_schemas(folder: Path = CRDS) -> dict[tuple[str, str], dict]:
    """{(apiVersion, kind): openAPIV3Schema} of every served version of every CRD in ``folder``."""
    schemas = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def with_defaults(value, schema: dict):
    """``value`` with the schema's defaults filled in where absent (the API server does this
    before validating)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for key, prop in schema.get("properties", {}).items():
            if key not in out and "default" in prop:
                out[key] = copy.deepcopy(prop["default"])
            if key in out:
                out[key] = with_defaults(out[key], prop)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(out) - set(schema.get("properties", {})):
                out[key] = with_defaults(out[key], extra)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(item, schema["items"]) for item in value]
    return value


def strict(schema: dict) -> dict:
    """The schema with unknown fields rejected wherever it lists the fields and does not
    preserve unknown ones (structural schemas prune them; an apply with --validate=strict fails)."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict(s) for s in out[key]]
    return out


def custom_errors(doc: dict, schemas: dict) -> list[str]:
    import jsonschema

    schema = schemas.get((doc.get("apiVersion"), doc.get("kind")))
    if schema is None:
        return [f"{name(doc)}: no CRD for {doc.get('apiVersion')} {doc.get('kind')} in {CRDS}"]
    body = {k: v for k, v in doc.items() if k != "metadata"}  # metadata: the API server's own schema
    checked = {**schema, "properties": {k: v for k, v in schema.get("properties", {}).items() if k != "metadata"}}
    validator = jsonschema.Draft7Validator(strict(checked))
    return [f"{name(doc)}: {err.message} (at {'.'.join(map(str, err.absolute_path))})"
            for err in validator.iter_errors(with_defaults(body, checked))]


# -- the RayService's Serve config -------------------------------------------------------------

def serve_config_errors(doc: dict) -> list[str]:
    from serving.config import ServeConfigError, check

    if doc.get("kind") != "RayService":
        return []
    try:
        check(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    except ServeConfigError as err:
        return [f"{name(doc)}: {err}"]
    return []


# -- the platform's policies -------------------------------------------------------------------

def _walk(node, path: tuple) -> list:
    if not path:
        return [node]
    key, rest = path[0], path[1:]
    if key == "*":
        return [found for item in (node or []) for found in _walk(item, rest)]
    return _walk(node[key], rest) if isinstance(node, dict) and key in node else []


def pod_specs(doc: dict) -> list[dict]:
    return [pod for path in POD_PATHS.get(doc.get("kind"), []) for pod in _walk(doc, path) if isinstance(pod, dict)]


PINNED = re.compile(r"^[^:@\s]+(:(?!latest$)[\w][\w.-]*|@sha256:[0-9a-f]{64})$")


def policy_errors(doc: dict) -> list[str]:
    """Pinned image tags; requests and limits of CPU and memory; non-root, read-only root
    filesystem, no privilege escalation, every capability dropped; no Secret data."""
    errors = []
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        errors.append(f"{name(doc)}: a Secret carries data in the repo")
    if doc.get("kind") == "FeatureStore":
        image = doc["spec"].get("feastProjectDir", {}).get("packaged", {}).get("image", "")
        if image and not PINNED.match(image):
            errors.append(f"{name(doc)}: packaged image {image!r} has no pinned tag")
    for pod in pod_specs(doc):
        pod_context = pod.get("securityContext", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            where = f"{name(doc)} container {container.get('name')}"
            if not PINNED.match(container.get("image", "")):
                errors.append(f"{where}: image {container.get('image')!r} has no pinned tag")
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(part, {}))
                if missing:
                    errors.append(f"{where}: no {part} for {', '.join(sorted(missing))}")
            context = {**pod_context, **container.get("securityContext", {})}
            if context.get("runAsNonRoot") is not True or context.get("runAsUser") == 0:
                errors.append(f"{where}: may run as root (runAsNonRoot is not true)")
            if context.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: root filesystem is writable")
            if context.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: privilege escalation is not disabled")
            capabilities = context.get("capabilities", {})
            if "ALL" not in capabilities.get("drop", []) or capabilities.get("add"):
                errors.append(f"{where}: capabilities are not all dropped")
    return errors


def all_errors(docs: list[dict], schemas: dict) -> list[str]:
    errors = []
    for doc in docs:
        errors += custom_errors(doc, schemas) if is_custom(doc, schemas) else builtin_errors(doc)
        errors += serve_config_errors(doc) + policy_errors(doc)
    return errors
