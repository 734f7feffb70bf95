"""The rules of ``k8s/`` that are this project's, not Kubernetes' or KubeRay's.

Schemas (kubernetes-validate, the KubeRay CRDs) say what a valid object is; Pod Security and
the API server say what a safe or consistent pod is. What neither can know:

- **Shared memory**: every Ray group mounts ``/dev/shm`` from a memory ``emptyDir`` whose
  ``sizeLimit`` holds its ``object-store-memory`` and stays below the container's memory limit.
- **Secrets**: referenced by name, only the ones docs/deploy.md creates (:data:`SECRETS`); never
  a Secret object in a manifest, never a credential (:data:`SENSITIVE_ENV`) as a literal value.
  ConfigMap references resolve to a ConfigMap and key of the manifests.
- **One version**: ``rayVersion`` is the Ray pin of ``pyproject.toml``, and every ``abs-ray``
  image is tagged ``<project version>-ray<that pin>-<gpu|cpu>`` (docker/Dockerfile builds it).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

# The Kubernetes quantity parser KubeRay's autoscaler applies to these same manifests: Ray's copy
# of kubernetes-client's `kubernetes.utils.parse_quantity`. Ray is pinned exactly and a test
# covers the import. The kubernetes client itself cannot join the dev dependencies: its current
# release needs python-dateutil>=3, botocore (boto3, moto) needs <3.
from ray.autoscaler._private.kuberay.utils import parse_quantity

Doc = dict[str, Any]

IMAGE = "abs-ray"
# Secrets the manifests may reference; docs/deploy.md creates each with kubectl.
SECRETS = {
    "abs-ray-s3": "S3 endpoint, region and keys (AWS_* variables)",
    "abs-ray-ray-token": "the Ray cluster token (key auth_token)",
}
# Variables that must come from a Secret, never a literal value in a manifest.
SENSITIVE_ENV = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}
)


def name_of(doc: Doc) -> str:
    """``Kind/name`` of an object, for messages."""
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(path, key, value)`` for every mapping entry under ``node``.

    >>> [p for p, _, _ in walk({"a": [{"b": 1}]})]
    ['a', 'a[0].b']
    """
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            yield here, k, v
            yield from walk(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def pod_specs(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """``(path, pod spec)`` for every pod template in an object (Ray groups, submitter, ...)."""
    for path, key, value in walk(doc.get("spec"), "spec"):
        if key == "spec" and isinstance(value, dict) and isinstance(value.get("containers"), list):
            yield path, value


def ray_cluster_spec(doc: Doc) -> Doc | None:
    """The RayCluster spec inside a RayJob, RayService or RayCluster (None for others)."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "RayCluster":
        return spec
    field = {"RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}.get(doc.get("kind"))
    return spec.get(field) if field else None


# --- shared memory -------------------------------------------------------------------------


def shm_errors(group: Doc, where: str) -> list[str]:
    """A Ray head or worker group: /dev/shm from memory, sized for the object store.

    The object store lives in /dev/shm (64 MiB in a container by default);
    ``object-store-memory`` (bytes) must fit in it, and the memory-backed volume counts
    against the container's memory limit.
    """
    spec = group["template"]["spec"]
    ray = spec["containers"][0]
    mount = next((m for m in ray.get("volumeMounts") or [] if m["mountPath"] == "/dev/shm"), None)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    volume = volumes.get(mount["name"], {}) if mount else {}
    empty_dir = volume.get("emptyDir") or {}
    if empty_dir.get("medium") != "Memory" or "sizeLimit" not in empty_dir:
        return [f"{where}: no /dev/shm from a memory emptyDir with a sizeLimit"]
    errors, shm = [], parse_quantity(empty_dir["sizeLimit"])
    store = (group.get("rayStartParams") or {}).get("object-store-memory")
    if store is None:
        errors.append(f"{where}: rayStartParams has no object-store-memory (bytes)")
    elif parse_quantity(store) > shm:
        errors.append(f"{where}: object-store-memory {store} exceeds /dev/shm {shm}")
    memory = ((ray.get("resources") or {}).get("limits") or {}).get("memory")
    if memory is not None and shm >= parse_quantity(memory):
        errors.append(f"{where}: /dev/shm {empty_dir['sizeLimit']} leaves no memory of {memory}")
    return errors


def memory_errors(docs: list[tuple[Path, Doc]]) -> list[str]:
    """:func:`shm_errors` for every Ray group of every ray.io object."""
    errors = []
    for path, doc in docs:
        cluster = ray_cluster_spec(doc)
        if cluster is None:
            continue
        where = f"{path.name}: {name_of(doc)}"
        errors += shm_errors(cluster["headGroupSpec"], f"{where}: head")
        for group in cluster.get("workerGroupSpecs") or []:
            errors += shm_errors(group, f"{where}: group {group.get('groupName')}")
    return errors


# --- references ----------------------------------------------------------------------------


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
        for _, key, value in walk(doc)
        if key in fields and isinstance(value, dict) and fields[key] in value
    }


def reference_errors(docs: list[tuple[Path, Doc]]) -> list[str]:
    """Secrets only by reference, to known names, credentials never literal; ConfigMaps resolve."""
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
        for at, key, value in walk(doc):
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
    return errors


# --- one version ---------------------------------------------------------------------------


def project_version(pyproject: Path) -> str:
    """The project's version: ``project.version``, or the module attribute that
    ``[tool.setuptools.dynamic] version = {attr = "pkg.__version__"}`` names, read from the
    source without importing it (the same rule setuptools applies when it builds the wheel).

    Raises:
        ValueError: neither is there, or the attribute is not a string literal.
    """
    config = tomllib.loads(pyproject.read_text())
    if "version" in config["project"]:
        return config["project"]["version"]
    dynamic = config.get("tool", {}).get("setuptools", {}).get("dynamic", {})
    module, _, name = dynamic.get("version", {}).get("attr", "").rpartition(".")
    base = pyproject.parent / module.replace(".", "/")
    for source in (base.with_suffix(".py"), base / "__init__.py"):
        if name and source.is_file():
            found = re.search(
                rf"^{re.escape(name)}\s*=\s*[\"']([^\"']+)[\"']", source.read_text(), re.MULTILINE
            )
            if found:
                return found.group(1)
    raise ValueError(f"{pyproject}: no project.version and no readable dynamic version attr")


def pinned_versions(pyproject: Path) -> tuple[str, str]:
    """``(project version, exact Ray pin)`` from ``pyproject.toml``.

    Raises:
        ValueError: Ray is not pinned with a single ``==``.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    for req in map(Requirement, project["dependencies"]):
        specs = list(req.specifier)
        if req.name == "ray" and len(specs) == 1 and specs[0].operator == "==":
            return project_version(pyproject), specs[0].version
    raise ValueError(f"{pyproject} pins no exact (==) version of ray")


def version_errors(docs: list[tuple[Path, Doc]], pyproject: Path) -> list[str]:
    """``rayVersion`` = the Ray pin; every abs-ray image = ``<version>-ray<pin>-<gpu|cpu>``."""
    version, ray = pinned_versions(pyproject)
    tag = re.compile(rf"^{IMAGE}:{re.escape(version)}-ray{re.escape(ray)}-(gpu|cpu)$")
    errors = []
    for path, doc in docs:
        where = f"{path.name}: {name_of(doc)}"
        cluster = ray_cluster_spec(doc)
        if cluster is not None and cluster.get("rayVersion") != ray:
            errors.append(
                f"{where}: rayVersion {cluster.get('rayVersion')!r}, pyproject pins {ray}"
            )
        for at, spec in pod_specs(doc):
            for c in spec["containers"]:
                image = c.get("image", "")
                if image.split(":")[0] == IMAGE and not tag.match(image):
                    errors.append(
                        f"{where}: {at}: image {image}, expected "
                        f"{IMAGE}:{version}-ray{ray}-<gpu|cpu>"
                    )
    return errors


# --- Serve capacity -------------------------------------------------------------------------

#: The Serve application the RayService runs (its ``args`` are a ServiceConfig).
SERVE_APP = "deployments.augment:build_app"


def ray_node(group: Doc) -> dict[str, float]:
    """The Ray resources of one pod of a head or worker group: ``{"CPU": c, "GPU": g}``.

    ``rayStartParams`` ``num-cpus``/``num-gpus`` when given, else what KubeRay passes to
    ``ray start``: the Ray container's CPU and ``nvidia.com/gpu`` limits (requests without).

    >>> ray_node({"rayStartParams": {"num-cpus": "0"}, "template": {"spec": {"containers": [
    ...     {"resources": {"limits": {"cpu": "4", "nvidia.com/gpu": "1"}}}]}}})
    {'CPU': 0.0, 'GPU': 1.0}
    """
    params = group.get("rayStartParams") or {}
    res = group["template"]["spec"]["containers"][0].get("resources") or {}
    have = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    cpu = params.get("num-cpus", have.get("cpu", 0))
    gpu = params.get("num-gpus", have.get("nvidia.com/gpu", 0))
    return {"CPU": float(parse_quantity(cpu)), "GPU": float(parse_quantity(gpu))}


def ray_nodes(cluster: Doc) -> list[dict[str, float]]:
    """Every Ray node of a cluster spec at its largest: the head and ``maxReplicas`` pods of
    each worker group."""
    nodes = [ray_node(cluster["headGroupSpec"])]
    for group in cluster.get("workerGroupSpecs") or []:
        count = group.get("maxReplicas", group.get("replicas", 1))
        nodes += [ray_node(group) for _ in range(count)]
    return nodes


def capacity_errors(docs: list[tuple[Path, Doc]]) -> list[str]:
    """A RayService's Serve replicas at their autoscaling maxima fit on its nodes at their
    largest (a maximum the cluster cannot place leaves a replica pending and the app
    UNHEALTHY)."""
    import yaml

    from abs_ray.serve.config import capacity_errors as placement_errors
    from abs_ray.serve.config import replica_resources

    errors = []
    for path, doc in docs:
        if doc.get("kind") != "RayService":
            continue
        nodes = ray_nodes(ray_cluster_spec(doc))
        config = yaml.safe_load(doc["spec"]["serveConfigV2"])
        replicas = replica_resources(config, (SERVE_APP,), gpus=any(n["GPU"] for n in nodes))
        where = f"{path.name}: {name_of(doc)}: serveConfigV2"
        errors += [f"{where}: {e}" for e in placement_errors(replicas, nodes)]
    return errors


def errors(docs: list[tuple[Path, Doc]], pyproject: Path) -> list[str]:
    """Every rule of this module over ``docs``."""
    return (
        memory_errors(docs)
        + reference_errors(docs)
        + version_errors(docs, pyproject)
        + capacity_errors(docs)
    )
