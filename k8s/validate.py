"""Check the manifests in ``k8s/`` without a cluster.

- **KubeRay objects** (``ray.io``: RayJob, RayService, RayCluster) against the operator's own
  CRD schemas, with every object closed (an unknown key such as ``maxReplica`` is an error,
  as is a wrong type). The CRDs are not part of this repository: name a folder holding them
  with ``--crds`` or ``ABS_RAY_KUBERAY_CRDS`` (``ray.io_rayjobs.yaml``, ... from the
  operator's ``ray-operator/config/crd/bases/``, or ``kubectl get crd rayjobs.ray.io -o yaml``
  from your cluster). Without it this part does not run, and says so.
- **Core objects** against the Kubernetes schemas those CRDs embed: a Deployment's pod
  template against the PodTemplateSpec schema, a Service against the Service schema, a
  PersistentVolumeClaim's spec against the claim schema (same folder).
- **Policy**, always: resource requests and limits on every container, non-root security
  contexts, pinned images, ``/dev/shm`` sized for the Ray object store, Secret and ConfigMap
  references that resolve (and no credentials written into a manifest).

::

    python k8s/validate.py --crds ../shared/kuberay-crds     # exit 1 on any error

The CRDs' CEL rules (``x-kubernetes-validations``) are not evaluated; the API server does
that on apply.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "k8s"
CRDS_ENV = "ABS_RAY_KUBERAY_CRDS"
RAY_GROUP = "ray.io"
RAY_KINDS = ("RayCluster", "RayJob", "RayService")

# Secrets the manifests may reference; docs/deploy.md creates each with kubectl.
SECRETS = {
    "abs-ray-s3": "S3 endpoint, region and keys (AWS_* variables)",
    "abs-ray-ray-token": "the Ray cluster token (key auth_token)",
}
# Variables that must come from a Secret, never a literal value in a manifest.
SENSITIVE_ENV = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}
)

Doc = dict[str, Any]


# --- loading -------------------------------------------------------------------------------


def load_manifests(folder: Path = MANIFESTS) -> list[tuple[Path, Doc]]:
    """Every YAML document in ``folder``'s ``*.yaml`` files that is a Kubernetes object.

    ``kustomization.yaml`` is left out (it is kustomize's, not the API server's).
    """
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def name_of(doc: Doc) -> str:
    """``Kind/name`` of an object, for messages."""
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


# --- schemas -------------------------------------------------------------------------------


def close_schema(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which every object with ``properties`` is closed.

    ``additionalProperties: false`` is added where the schema lists ``properties`` and does
    not already say what other keys may be (``additionalProperties``) or keep unknown fields
    (``x-kubernetes-preserve-unknown-fields``); free-form maps stay open.

    >>> s = close_schema({"type": "object", "properties": {"a": {"type": "object",
    ...     "x-kubernetes-preserve-unknown-fields": True, "properties": {"b": {}}}}})
    >>> s["additionalProperties"], "additionalProperties" in s["properties"]["a"]
    (False, False)
    """
    if isinstance(schema, list):
        return [close_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: close_schema(v) for k, v in schema.items() if k != "properties"}
    if "properties" in schema:
        out["properties"] = {k: close_schema(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    return out


def crds_folder(explicit: str | os.PathLike | None = None) -> Path | None:
    """The CRD folder: ``explicit``, else ``$ABS_RAY_KUBERAY_CRDS``, else None (not set)."""
    value = explicit if explicit is not None else os.environ.get(CRDS_ENV, "")
    return Path(value) if str(value).strip() else None


def load_crd_schemas(folder: Path, version: str = "v1") -> dict[str, Doc]:
    """Closed schemas of the KubeRay kinds, by kind, from the CRD files in ``folder``.

    Files may hold one CRD each (the operator's ``config/crd/bases``), several, or a ``List``
    (``kubectl get crd rayclusters.ray.io rayjobs.ray.io rayservices.ray.io -o yaml``).

    Raises:
        FileNotFoundError: ``folder`` is missing, or holds no CRD for one of :data:`RAY_KINDS`.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"KubeRay CRD folder {folder} does not exist")
    schemas: dict[str, Doc] = {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are ~60k lines
    for path in sorted(folder.glob("*.y*ml")):
        for doc in yaml.load_all(path.read_text(), Loader=loader):
            # `kubectl get crd A B -o yaml` writes one List holding them
            crds = (doc.get("items") or []) if doc and doc.get("kind") == "List" else [doc]
            for crd in crds:
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                if crd["spec"].get("group") != RAY_GROUP:
                    continue
                for v in crd["spec"]["versions"]:
                    if v["name"] == version:
                        kind = crd["spec"]["names"]["kind"]
                        schemas[kind] = close_schema(v["schema"]["openAPIV3Schema"])
    missing = [k for k in RAY_KINDS if k not in schemas]
    if missing:
        raise FileNotFoundError(
            f"no {RAY_GROUP}/{version} CRD for {', '.join(missing)} in {folder} "
            f"(found: {', '.join(sorted(schemas)) or 'none'})"
        )
    return schemas


def core_schemas(crd_schemas: dict[str, Doc]) -> dict[str, Doc]:
    """Kubernetes core schemas embedded in the RayCluster CRD (already closed).

    ``pod_template`` (PodTemplateSpec), ``service`` (Service), ``pvc_spec``
    (PersistentVolumeClaimSpec): generated from k8s.io/api like the API server's own.
    """
    head = crd_schemas["RayCluster"]["properties"]["spec"]["properties"]["headGroupSpec"]
    template = head["properties"]["template"]
    volume = template["properties"]["spec"]["properties"]["volumes"]["items"]
    claim = volume["properties"]["ephemeral"]["properties"]["volumeClaimTemplate"]
    return {
        "pod_template": template,
        "service": head["properties"]["headService"],
        "pvc_spec": claim["properties"]["spec"],
    }


def schema_errors(instance: Any, schema: Doc, where: str, prefix: str = "") -> list[str]:
    """Validation errors of ``instance`` against ``schema``, one line each, with the path.

    ``prefix`` is the path of ``instance`` inside its object (for messages).
    """
    from jsonschema import Draft7Validator

    errors = []
    for err in sorted(Draft7Validator(schema).iter_errors(instance), key=lambda e: list(e.path)):
        path = ".".join([prefix] * bool(prefix) + [str(p) for p in err.absolute_path])
        errors.append(f"{where}: {path or '<root>'}: {err.message}")
    return errors


def crd_errors(docs: list[tuple[Path, Doc]], crd_schemas: dict[str, Doc]) -> list[str]:
    """Every ray.io object against its CRD; core objects against the embedded schemas."""
    core = core_schemas(crd_schemas)
    errors = []
    for path, doc in docs:
        where = f"{path.name}: {name_of(doc)}"
        kind, api = doc.get("kind"), doc.get("apiVersion", "")
        if api.startswith(RAY_GROUP + "/"):
            if kind not in crd_schemas:
                errors.append(f"{where}: no CRD schema for kind {kind}")
                continue
            errors += schema_errors(doc, crd_schemas[kind], where)
        elif kind == "Deployment":
            template = doc["spec"]["template"]
            errors += schema_errors(template, core["pod_template"], where, "spec.template")
        elif kind == "Service":
            errors += schema_errors(doc, core["service"], where)
        elif kind == "PersistentVolumeClaim":
            errors += schema_errors(doc["spec"], core["pvc_spec"], where, "spec")
    return errors


# --- policy --------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (bytes, cores).

    Raises:
        ValueError: not a quantity this checker knows.

    >>> quantity("8Gi"), quantity("250m"), quantity(2), quantity("1073741824")
    (8589934592.0, 0.25, 2.0, 1073741824.0)
    """
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY.match(str(value))
    if not m or m[2] not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(m[1]) * _SUFFIX[m[2]]


def pod_specs(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """``(path, pod spec)`` for every pod template in an object (Ray groups, submitter, ...)."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, Doc]]:
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                yield path, node
                return
            for k, v in node.items():
                yield from walk(v, f"{path}.{k}" if path else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")

    yield from walk(doc.get("spec"), "spec")


def container_errors(c: Doc, where: str) -> list[str]:
    """Requests and limits (cpu, memory), limits >= requests, a non-root security context."""
    errors = []
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                errors.append(f"{where}: no resources.{kind}.{r}")
    for r, req in (res.get("requests") or {}).items():
        lim = (res.get("limits") or {}).get(r)
        if lim is not None and quantity(req) > quantity(lim):
            errors.append(f"{where}: resources.requests.{r} {req} exceeds the limit {lim}")
    sc = c.get("securityContext") or {}
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        errors.append(f"{where}: securityContext.capabilities.drop must hold ALL")
    if sc.get("privileged") or sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
        errors.append(f"{where}: container may run as root or privileged")
    image = c.get("image", "")
    if image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        errors.append(f"{where}: image {image!r} is not pinned to a tag")
    return errors


def pod_errors(spec: Doc, where: str) -> list[str]:
    """A pod spec: non-root pod security context, and every container checked."""
    errors = []
    sc = spec.get("securityContext") or {}
    if sc.get("runAsNonRoot") is not True:
        errors.append(f"{where}: securityContext.runAsNonRoot must be true")
    if sc.get("runAsUser") == 0 or sc.get("runAsGroup") == 0:
        errors.append(f"{where}: securityContext runs as root (uid or gid 0)")
    if (sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        errors.append(f"{where}: securityContext.seccompProfile.type must be RuntimeDefault")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        errors.append(f"{where}: uses the host's namespaces")
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            errors += container_errors(c, f"{where}.{group}[{i}] ({c.get('name')})")
    return errors


def ray_group_errors(group: Doc, where: str) -> list[str]:
    """A Ray head or worker group: /dev/shm mounted from memory, sized for the object store.

    The object store lives in /dev/shm (64 MiB in a container by default); ``object-store-memory``
    (bytes) must fit in it, and the memory-backed volume counts against the memory limit.
    """
    errors = []
    spec = group["template"]["spec"]
    ray = spec["containers"][0]
    mount = next((m for m in ray.get("volumeMounts") or [] if m["mountPath"] == "/dev/shm"), None)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    volume = volumes.get(mount["name"]) if mount else None
    empty_dir = (volume or {}).get("emptyDir") or {}
    if empty_dir.get("medium") != "Memory" or "sizeLimit" not in empty_dir:
        return [f"{where}: no /dev/shm from a memory emptyDir with a sizeLimit"]
    shm = quantity(empty_dir["sizeLimit"])
    store = (group.get("rayStartParams") or {}).get("object-store-memory")
    if store is None:
        errors.append(f"{where}: rayStartParams has no object-store-memory (bytes)")
    elif quantity(store) > shm:
        errors.append(f"{where}: object-store-memory {store} exceeds /dev/shm {shm:.0f}")
    memory = ((ray.get("resources") or {}).get("limits") or {}).get("memory")
    if memory is not None and shm >= quantity(memory):
        errors.append(f"{where}: /dev/shm {empty_dir['sizeLimit']} leaves no memory of {memory}")
    return errors


def ray_cluster_spec(doc: Doc) -> Doc | None:
    """The RayCluster spec inside a RayJob, RayService or RayCluster (None for others)."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "RayCluster":
        return spec
    field = {"RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}.get(doc.get("kind"))
    return spec.get(field) if field else None


def policy_errors(docs: list[tuple[Path, Doc]]) -> list[str]:
    """Resources, security contexts and pinned images everywhere; Ray's shared memory."""
    errors = []
    for path, doc in docs:
        where = f"{path.name}: {name_of(doc)}"
        for at, spec in pod_specs(doc):
            errors += pod_errors(spec, f"{where}: {at}")
        cluster = ray_cluster_spec(doc)
        if cluster is None:
            continue
        errors += ray_group_errors(cluster["headGroupSpec"], f"{where}: head")
        for group in cluster.get("workerGroupSpecs") or []:
            errors += ray_group_errors(group, f"{where}: group {group.get('groupName')}")
        autoscaler = cluster.get("autoscalerOptions") or {}
        if cluster.get("enableInTreeAutoscaling"):
            errors += container_errors(autoscaler, f"{where}: autoscalerOptions")
            if autoscaler.get("securityContext", {}).get("runAsNonRoot") is not True:
                errors.append(f"{where}: autoscalerOptions.securityContext.runAsNonRoot not true")
    return errors


# --- references ----------------------------------------------------------------------------


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(path, key, value)`` for every mapping entry under ``node``."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            yield here, k, v
            yield from _walk(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def secret_references(doc: Doc) -> set[str]:
    """Names of the Secrets an object reads (env, envFrom, volumes, Ray authOptions)."""
    # the key that refers to a Secret -> its field holding the Secret's name
    fields = {
        "secretRef": "name",
        "secretKeyRef": "name",
        "secret": "secretName",
        "authOptions": "secretName",
    }
    return {
        value[fields[key]]
        for _, key, value in _walk(doc)
        if key in fields and isinstance(value, dict) and fields[key] in value
    }


def reference_errors(docs: list[tuple[Path, Doc]]) -> list[str]:
    """Secrets only by reference, to known names; ConfigMap keys and Service targets resolve."""
    errors = []
    config_maps = {
        d["metadata"]["name"]: d.get("data") or {} for _, d in docs if d.get("kind") == "ConfigMap"
    }
    for path, doc in docs:
        where = f"{path.name}: {name_of(doc)}"
        if doc.get("kind") == "Secret":
            errors.append(f"{where}: a Secret in a manifest; create it with kubectl instead")
        for name in sorted(secret_references(doc) - set(SECRETS)):
            errors.append(f"{where}: references Secret {name!r}, not one of {sorted(SECRETS)}")
        for at, key, value in _walk(doc):
            if key == "env" and isinstance(value, list):
                literal = [
                    v["name"] for v in value if v.get("name") in SENSITIVE_ENV and "value" in v
                ]
                errors += [f"{where}: {at}: {name} has a literal value" for name in literal]
            elif key in ("configMapRef", "configMapKeyRef"):
                data = config_maps.get(value["name"])
                if data is None:
                    errors.append(f"{where}: {at}: no ConfigMap {value['name']!r} in the manifests")
                elif key == "configMapKeyRef" and value["key"] not in data:
                    errors.append(f"{where}: {at}: no key {value['key']!r} in {value['name']}")
        if doc.get("kind") == "Service":
            errors += _service_errors(doc, docs, where)
        if doc.get("kind") == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in selector.items()):
                errors.append(f"{where}: selector {selector} does not match the pod labels")
    return errors


def _service_errors(service: Doc, docs: list[tuple[Path, Doc]], where: str) -> list[str]:
    """A Service selects a Deployment's pods, and each targetPort is one of their ports."""
    selector = service["spec"].get("selector") or {}
    for _, doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        template = doc["spec"]["template"]
        labels = template["metadata"].get("labels") or {}
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            ports = [p for c in template["spec"]["containers"] for p in c.get("ports") or []]
            known = {p.get("name") for p in ports} | {p["containerPort"] for p in ports}
            return [
                f"{where}: targetPort {p.get('targetPort')!r} is no port of {name_of(doc)}"
                for p in service["spec"]["ports"]
                if p.get("targetPort", p["port"]) not in known
            ]
    return [f"{where}: selector {selector} matches no Deployment's pods"]


# --- command line --------------------------------------------------------------------------


def check(folder: Path = MANIFESTS, crds: Path | None = None) -> tuple[list[str], str | None]:
    """All errors of the manifests in ``folder``; and why the CRD part did not run (or None)."""
    docs = load_manifests(folder)
    errors = policy_errors(docs) + reference_errors(docs)
    if crds is None:
        return errors, (
            f"KubeRay CRD schemas not given (--crds or {CRDS_ENV}): the ray.io objects and the "
            "core objects' schemas were NOT checked"
        )
    return errors + crd_errors(docs, load_crd_schemas(crds)), None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crds", default=None, help=f"KubeRay CRD folder (default: ${CRDS_ENV})")
    p.add_argument("--manifests", type=Path, default=MANIFESTS)
    args = p.parse_args(argv)
    try:
        errors, not_run = check(args.manifests, crds_folder(args.crds))
    except FileNotFoundError as exc:  # a CRD folder that is not one
        print(f"error: {exc}")
        return 2
    for line in errors:
        print(line)
    if not_run:
        print(f"warning: {not_run}")
    print(f"{args.manifests}: {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
