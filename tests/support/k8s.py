"""Reading and validating ``deploy/k8s`` offline: no cluster, no network.

Kubernetes kinds are checked against the API's JSON schemas shipped by the
``kubernetes-validate`` package; KEDA's kinds against the ``openAPIV3Schema`` of
its CRDs, vendored in ``deploy/k8s/schemas`` (see the README there).
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# One Kubernetes minor version, the newest that KEDA 2.16 supports (1.29 to 1.31).
KUBERNETES_VERSION = "1.31"
KEDA_VERSION = "2.16.1"
# TriggerAuthentication and ClusterTriggerAuthentication share one schema (README).
KEDA_CRDS = {
    "ScaledObject": f"keda-{KEDA_VERSION}-scaledobjects.yaml",
    "TriggerAuthentication": f"keda-{KEDA_VERSION}-clustertriggerauthentications.yaml",
}


def kustomization(folder: Path = K8S) -> dict:
    """The folder's ``kustomization.yaml`` as a dict."""
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def documents(path: Path) -> list[dict]:
    """Every YAML document of ``path`` that is not empty."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def load_manifests(folder: Path = K8S) -> list[dict]:
    """The objects ``kubectl apply -k folder`` would send: each listed resource file's
    documents, with the kustomization's namespace set on namespaced kinds. Only the
    fields this repository uses (``resources``, ``namespace``) are interpreted."""
    spec = kustomization(folder)
    objects = [doc for name in spec["resources"] for doc in documents(folder / name)]
    for obj in objects:
        if obj["kind"] != "Namespace" and "namespace" in spec:
            obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def validate(obj: dict) -> None:
    """Validate one object; raises ``kubernetes_validate.ValidationError`` (Kubernetes
    kinds) or ``jsonschema.ValidationError`` (KEDA kinds). Unknown fields are errors
    in both, as with ``kubectl apply --validate=strict``."""
    if obj["apiVersion"].startswith("keda.sh/"):
        jsonschema.Draft7Validator(keda_schema(obj["kind"])).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@cache
def keda_crd(kind: str) -> dict:
    """The vendored CRD document that defines ``kind`` (``KEDA_CRDS``)."""
    return documents(K8S / "schemas" / KEDA_CRDS[kind])[0]


def keda_schema(kind: str) -> dict:
    """The ``v1alpha1`` ``openAPIV3Schema`` of ``kind``, made strict: every object
    schema that lists its properties refuses others. Raises KeyError for a kind
    not in ``KEDA_CRDS``."""
    version = next(v for v in keda_crd(kind)["spec"]["versions"] if v["name"] == "v1alpha1")
    return _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def _strict(schema: dict) -> dict:
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema.setdefault("additionalProperties", False)
    for key in ("properties", "patternProperties"):
        for child in schema.get(key, {}).values():
            _strict(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _strict(schema[key])
    for child in schema.get("anyOf", []) + schema.get("allOf", []) + schema.get("oneOf", []):
        _strict(child)
    return schema


def pod_specs(objects: list[dict]) -> dict[str, dict]:
    """Pod spec of each Deployment and Job, by the object's name."""
    return {
        obj["metadata"]["name"]: obj["spec"]["template"]["spec"]
        for obj in objects
        if obj["kind"] in ("Deployment", "Job")
    }


def env_names(container: dict, objects: list[dict]) -> set[str]:
    """Every variable ``container`` is given: its ``env`` and the keys of the
    ConfigMaps it takes whole (``envFrom``)."""
    config_maps = {obj["metadata"]["name"]: obj["data"] for obj in objects if obj["kind"] == "ConfigMap"}
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        names |= set(config_maps[source["configMapRef"]["name"]])
    return names


def secret_refs(container: dict) -> set[tuple[str, str, str]]:
    """``(variable, secret, key)`` for each variable ``container`` takes from a Secret."""
    return {
        (item["name"], ref["name"], ref["key"])
        for item in container.get("env", [])
        if (ref := item.get("valueFrom", {}).get("secretKeyRef"))
    }
