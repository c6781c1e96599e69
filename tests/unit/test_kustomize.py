"""tests/support/kustomize.py: the renderer the manifest tests use, checked on its own and
against kustomize itself (``kustomize build`` or ``kubectl kustomize``) where one is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.kustomize import Unsupported, render, split_image, strategic_merge

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("base", "overlays/dev", "overlays/prod")


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def keyed(resources: list[dict]) -> dict[tuple[str, str | None, str], dict]:
    return {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]): r for r in resources if r}


@pytest.mark.parametrize("target", TARGETS)
def test_renders_k8s_exactly_as_kustomize_does(target: str) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed: the renderer's own tests below still ran")
    out = subprocess.run([*command, str(ROOT / "k8s" / target)], capture_output=True, text=True, timeout=60, check=True).stdout
    theirs = keyed(list(yaml.safe_load_all(out)))
    ours = keyed(render(ROOT / "k8s" / target))
    assert ours.keys() == theirs.keys()
    for key, resource in ours.items():
        assert resource == theirs[key], key


def test_lists_merge_by_key_in_kubernetes_order_and_others_are_replaced() -> None:
    base = {
        "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}], "args": ["serve"]}],
        "tolerations": [{"key": "k"}],
        "keep": 1,
        "drop": 2,
    }
    patch = {
        "containers": [{"name": "a", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}], "args": ["migrate"]}],
        "tolerations": [],
        "drop": None,
    }
    merged = strategic_merge(base, patch, ())
    assert merged["containers"][0]["env"] == [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}, {"name": "X", "value": "1"}]
    assert merged["containers"][0]["args"] == ["migrate"]
    assert merged["tolerations"] == [] and merged["keep"] == 1 and "drop" not in merged
    assert base["containers"][0]["env"][1]["value"] == "2", "the base is not modified"


def test_ports_merge_by_container_port_in_containers_and_by_port_in_services() -> None:
    pod = {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]}
    merged = strategic_merge(pod, {"containers": [{"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}, ())
    assert merged["containers"][0]["ports"] == [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
    service = {"spec": {"ports": [{"port": 80, "name": "http"}]}}
    merged = strategic_merge(service, {"spec": {"ports": [{"port": 80, "targetPort": 8000}]}}, ())
    assert merged["spec"]["ports"] == [{"port": 80, "name": "http", "targetPort": 8000}]


def test_images_keep_or_replace_the_tag() -> None:
    assert split_image("chat-server") == ("chat-server", "")
    assert split_image("registry:5000/chat/chat-server:1.2") == ("registry:5000/chat/chat-server", "1.2")
    assert split_image("nginx@sha256:abc") == ("nginx", "@sha256:abc")


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)


def test_a_small_overlay(tmp_path: Path) -> None:
    write(tmp_path, {
        "base/kustomization.yaml": "namespace: ns\nresources: [app.yaml]\n",
        "base/app.yaml": (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n"
            "spec:\n  template:\n    spec:\n      containers: [{name: app, image: 'app:1'}]\n"
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n"
        ),
        "dev/kustomization.yaml": (
            "resources: [../base]\nreplicas: [{name: app, count: 2}]\nimages: [{name: app, newName: reg/app}]\n"
            "labels: [{pairs: {env: dev}, includeSelectors: false}]\npatches: [{path: p.yaml}]\n"
        ),
        "dev/p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec: {minReadySeconds: 5}\n",
    })
    deployment, namespace = render(tmp_path / "dev")
    assert deployment["metadata"] == {"name": "app", "namespace": "ns", "labels": {"env": "dev"}}
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["minReadySeconds"] == 5
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/app:1"
    assert "namespace" not in namespace["metadata"]


@pytest.mark.parametrize(
    ("kustomization", "patch"),
    [
        ("resources: [a.yaml]\nconfigMapGenerator: [{name: x}]\n", None),  # a field not implemented
        ("resources: [a.yaml]\npatches: [{path: p.yaml}]\n", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nope}\n"),  # matches nothing
        ("resources: [a.yaml]\npatches: [{path: p.yaml}]\n", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n$patch: replace\n"),
        ("resources: [a.yaml]\nlabels: [{pairs: {x: y}, includeSelectors: true}]\n", None),
    ],
)
def test_anything_else_is_refused_not_skipped(tmp_path: Path, kustomization: str, patch: str | None) -> None:
    write(tmp_path, {"kustomization.yaml": kustomization, "a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"})
    if patch:
        write(tmp_path, {"p.yaml": patch})
    with pytest.raises(Unsupported):
        render(tmp_path)
