"""A small renderer for exactly the kustomize features k8s/ uses, so the manifests can be
rendered and validated offline on any machine, with or without kustomize.

Supported, in kustomize's own order within one kustomization (its built-in transformers run
patches, then namespace, labels, replicas, images):

* ``resources``: YAML files (several documents each) and directories holding a kustomization;
* ``patches``: strategic-merge patches from ``path`` (several documents allowed), each matched
  to exactly one resource by kind and name;
* ``namespace``; ``labels`` with ``includeSelectors: false`` (metadata labels only);
* ``replicas`` (Deployment, StatefulSet, ReplicaSet) and ``images`` (newName, newTag).

The strategic merge follows Kubernetes' patch strategy for the lists our patches touch: lists of
containers, init containers, env variables, volumes and image pull secrets merge by ``name``,
volume mounts by ``mountPath``, container ports by ``containerPort`` and Service ports by
``port`` (the patch's items first, then the base's others, as Kubernetes orders them); every
other list is replaced whole; a ``null`` deletes a key. Anything else — another
kustomization field, a ``$patch`` directive, a patch that matches no resource or several — is
refused with :class:`Unsupported`, never skipped. tests/unit/test_kustomize.py renders k8s/
with this and with kustomize (``kubectl kustomize``) where one is installed, and compares.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "namespace", "labels", "resources", "patches", "replicas", "images"})
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass"})
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name", "imagePullSecrets": "name", "volumeMounts": "mountPath"}
WORKLOADS_WITH_REPLICAS = frozenset({"Deployment", "StatefulSet", "ReplicaSet"})


class Unsupported(Exception):
    """The kustomization uses something this renderer does not implement."""


def render(directory: Path) -> list[Resource]:
    """The resources of the kustomization in ``directory``, transformed."""
    path = directory / "kustomization.yaml"
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise Unsupported(f"{path}: fields {sorted(unknown)} are not implemented by this renderer")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        if target.is_dir():
            resources.extend(render(target))
        else:
            resources.extend(load_documents(target))
    for patch_entry in spec.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise Unsupported(f"{path}: only `patches: - path: FILE` is implemented, got {patch_entry}")
        for patch in load_documents(directory / patch_entry["path"]):
            _apply_patch(resources, patch)
    if "namespace" in spec:
        for r in resources:
            if r["kind"] not in CLUSTER_SCOPED:
                r["metadata"]["namespace"] = spec["namespace"]
    for entry in spec.get("labels", []):
        if entry.get("includeSelectors", False) or entry.get("includeTemplates", False) or set(entry) - {"pairs", "includeSelectors"}:
            raise Unsupported(f"{path}: only labels with includeSelectors: false are implemented, got {entry}")
        for r in resources:
            r["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for entry in spec.get("replicas", []):
        matches = [r for r in resources if r["kind"] in WORKLOADS_WITH_REPLICAS and r["metadata"]["name"] == entry["name"]]
        if len(matches) != 1:
            raise Unsupported(f"{path}: replicas for {entry['name']!r} match {len(matches)} workloads")
        matches[0]["spec"]["replicas"] = entry["count"]
    for entry in spec.get("images", []):
        if set(entry) - {"name", "newName", "newTag"}:
            raise Unsupported(f"{path}: images supports name, newName, newTag; got {entry}")
        for r in resources:
            for container in pod_containers(r):
                name, tag = split_image(container["image"])
                if name != entry["name"]:
                    continue
                new_name = entry.get("newName", name)
                if "newTag" in entry:
                    container["image"] = f"{new_name}:{entry['newTag']}"
                else:  # keep the tag (or digest) it had
                    container["image"] = new_name + (tag if tag.startswith("@") else f":{tag}" if tag else "")
    return resources


def load_documents(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_spec(resource: Resource) -> dict[str, Any] | None:
    """The pod spec inside a workload (or a Pod), else None."""
    kind, spec = resource["kind"], resource.get("spec", {})
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return spec["template"]["spec"]
    return None


def pod_containers(resource: Resource) -> list[dict[str, Any]]:
    spec = pod_spec(resource)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def split_image(image: str) -> tuple[str, str]:
    """``registry:5000/a/b:tag`` → (``registry:5000/a/b``, ``tag``); a digest stays with the tag."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, ""


def _apply_patch(resources: list[Resource], patch: Resource) -> None:
    matches = [r for r in resources if r["kind"] == patch["kind"] and r["metadata"]["name"] == patch["metadata"]["name"]]
    if len(matches) != 1:
        raise Unsupported(f"patch {patch['kind']}/{patch['metadata']['name']} matches {len(matches)} resources")
    merged = strategic_merge(matches[0], patch, ())
    matches[0].clear()
    matches[0].update(merged)


def strategic_merge(base: Any, patch: Any, path: tuple[str, ...]) -> Any:
    """``patch`` merged into a copy of ``base``; ``path`` is the chain of keys down to here."""
    if isinstance(patch, dict):
        if "$patch" in patch or any(k.startswith("$") for k in patch):
            raise Unsupported(f"patch directives are not implemented (at {'.'.join(path)})")
        out = copy.deepcopy(base) if isinstance(base, dict) else {}
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, (*path, key))
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(patch, list):
        key = _merge_key(path)
        if key is None or not isinstance(base, list):
            return copy.deepcopy(patch)
        # As Kubernetes orders a merged list: the patch's items first, in the patch's order
        # (merged into the base item with the same key), then the base's other items.
        by_key = {existing.get(key): existing for existing in base if isinstance(existing, dict)}
        merged = []
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise Unsupported(f"list {'.'.join(path)} merges by {key!r}; an item lacks it: {item!r}")
            old = by_key.get(item[key])
            merged.append(strategic_merge(old, item, (*path, str(item[key]))) if old is not None else copy.deepcopy(item))
        patched = {item[key] for item in patch}
        return merged + [copy.deepcopy(e) for e in base if not (isinstance(e, dict) and e.get(key) in patched)]
    return copy.deepcopy(patch)


def _merge_key(path: tuple[str, ...]) -> str | None:
    field = path[-1] if path else ""
    if field == "ports":
        # A container's ports (…containers.<name>.ports) merge by containerPort; a Service's by port.
        return "containerPort" if len(path) >= 3 and path[-3] in ("containers", "initContainers") else "port"
    return MERGE_KEYS.get(field)
