"""Check the manifests in ``k8s/`` without a cluster.

- **Core objects** (Namespace, ConfigMap, Deployment, Service, PersistentVolumeClaim, ...) by
  ``kubernetes-validate``, against the Kubernetes schemas its wheel carries (nothing is fetched),
  strict (an unknown key is an error), for the oldest and newest Kubernetes of
  :data:`KUBERNETES_VERSIONS`.
- **KubeRay objects** (``ray.io``: RayJob, RayService, RayCluster) against the operator's own
  CRD schemas, with every object closed (an unknown key such as ``maxReplica`` is an error,
  as is a wrong type). The CRDs are not part of this repository: name a folder holding them
  with ``--crds`` or ``ABS_RAY_KUBERAY_CRDS`` (``ray.io_rayjobs.yaml``, ... from the
  operator's ``ray-operator/config/crd/bases/``, or ``kubectl get crd rayjobs.ray.io -o yaml``
  from your cluster). Without it this part does not run, and says so.
- **The project's rules** (``k8s/house_rules.py``): ``/dev/shm`` sized for the object store,
  Secrets only by reference, one Ray version in pyproject.toml, ``rayVersion`` and the images,
  and Serve capacity: a RayService's Serve replicas, at their autoscaling maxima, can all be
  placed on its Ray nodes at their largest (head + each worker group's ``maxReplicas``).

::

    python k8s/validate.py --crds ../shared/kuberay-crds     # exit 1 on any error

Pod security (non-root, capabilities, seccomp), requests within limits and selectors matching
labels are the API server's: Pod Security admission (k8s/namespace.yaml's labels) and
``kubectl apply --dry-run=server -k k8s/``. The CRDs' CEL rules (``x-kubernetes-validations``)
are left to it too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import house_rules  # k8s/house_rules.py: this folder is first on sys.path, as for any script
import kubernetes_validate
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "k8s"
CRDS_ENV = "ABS_RAY_KUBERAY_CRDS"
RAY_GROUP = "ray.io"
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
# The oldest Kubernetes docs/deploy.md supports (a field it lacks is an error) and the newest
# the kubernetes-validate dev dependency carries (a field removed since is an error).
KUBERNETES_VERSIONS = ("1.29", "1.37")

Doc = dict[str, Any]
name_of = house_rules.name_of
ray_nodes = house_rules.ray_nodes
capacity_errors = house_rules.capacity_errors


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


def schema_errors(instance: Any, schema: Doc, where: str) -> list[str]:
    """Every validation error of ``instance`` against ``schema``, one line each, with its path."""
    errors = []
    for err in sorted(Draft7Validator(schema).iter_errors(instance), key=lambda e: list(e.path)):
        path = ".".join(str(p) for p in err.absolute_path)
        errors.append(f"{where}: {path or '<root>'}: {err.message}")
    return errors


def crd_errors(docs: list[tuple[Path, Doc]], crd_schemas: dict[str, Doc]) -> list[str]:
    """Every ray.io object against its closed CRD schema (other objects are left alone)."""
    errors = []
    for path, doc in docs:
        if not doc.get("apiVersion", "").startswith(RAY_GROUP + "/"):
            continue
        where = f"{path.name}: {name_of(doc)}"
        if doc.get("kind") not in crd_schemas:
            errors.append(f"{where}: no CRD schema for kind {doc.get('kind')}")
        else:
            errors += schema_errors(doc, crd_schemas[doc["kind"]], where)
    return errors


def core_errors(
    docs: list[tuple[Path, Doc]], versions: tuple[str, ...] = KUBERNETES_VERSIONS
) -> list[str]:
    """Every object outside ray.io against the Kubernetes schemas, strict, for each version.

    kubernetes-validate reports the first error of an object (per version); a kind it has no
    schema for is an error here, not a pass.
    """
    errors = []
    for path, doc in docs:
        if doc.get("apiVersion", "").startswith(RAY_GROUP + "/"):
            continue
        where = f"{path.name}: {name_of(doc)}"
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                at = ".".join(map(str, e.path)) or "<root>"
                errors.append(f"{where}: Kubernetes {e.version}: {at}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{where}: {e.message}")
    return errors


# --- command line --------------------------------------------------------------------------


def check(
    folder: Path = MANIFESTS, crds: Path | None = None, pyproject: Path = ROOT / "pyproject.toml"
) -> tuple[list[str], str | None]:
    """All errors of the manifests in ``folder``; and why the CRD part did not run (or None)."""
    docs = load_manifests(folder)
    errors = core_errors(docs) + house_rules.errors(docs, pyproject)
    if crds is None:
        return errors, (
            f"KubeRay CRD schemas not given (--crds or {CRDS_ENV}): the ray.io objects were NOT "
            "checked against their schemas"
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
