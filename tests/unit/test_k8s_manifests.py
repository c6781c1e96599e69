"""k8s/: the base and both overlays, rendered offline (tests/support/kustomize.py, compared with
kustomize itself in test_kustomize.py), validated against the Kubernetes schemas that the
`kubernetes-validate` package ships, and cross-checked against the node's settings.

The settings cross-check takes the CHAT_* names from chat/config.py (``known_settings``: the names
``from_env`` reads, never listed twice) and parses each overlay's environment with ``from_env``
itself, as the kubelet would hand it to the pod.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from chat import config
from tests.support.kustomize import Resource, load_documents, pod_containers, pod_spec, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes these manifests are meant for, and the newest the package knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Environment names of the chat pods that are not node settings, and who reads them.
OTHER_VARIABLES = {
    "POD_NAME": "the Deployment (CHAT_NODE_ID)",
    "POD_IP": "the Deployment (CHAT_PUBLIC_URL)",
    "PUBLIC_WS_ORIGIN": "the Deployment (CHAT_PUBLIC_URL)",
    "FORWARDED_ALLOW_IPS": "uvicorn (X-Forwarded-For from the proxies)",
}
# What the Secret `chat-secrets` holds once created as k8s/README.md says (placeholders here).
SECRET_PLACEHOLDERS = {
    "CHAT_JWT_SECRET": "x" * 64,
    "CHAT_REDIS_URL": "redis://:password@redis-0.redis:6379/0",
    "REDIS_PASSWORD": "password",
    "CHAT_METRICS_TOKEN": "m" * 64,
}
POD_SAMPLE = {"POD_NAME": "chat-5d8f7c9b4-x2x7q", "POD_IP": "10.12.3.45"}


@functools.cache
def rendered(target: str) -> tuple[Resource, ...]:
    return tuple(render(K8S / target))


def one(resources: tuple[Resource, ...], kind: str, name: str) -> Resource:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def chat_settings_names() -> frozenset[str]:
    """Every CHAT_* setting: the names chat/config.py's ``from_env`` reads (``known_settings``)."""
    names = config.known_settings()
    assert len(names) > 30, names  # the settings, not nothing
    return names


def container(resources: tuple[Resource, ...], workload: str, name: str) -> dict[str, Any]:
    (found,) = [c for c in pod_containers(one(resources, "Deployment", workload)) if c["name"] == name]
    return found


def environment(resources: tuple[Resource, ...], c: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The container's environment as the kubelet builds it (envFrom, then env with $(VAR)
    expanded), with the Secret's placeholders and sample pod fields; and where each name came from."""
    env: dict[str, str] = {}
    source: dict[str, str] = {}
    for ref in c.get("envFrom", []):
        data = one(resources, "ConfigMap", ref["configMapRef"]["name"])["data"]
        env.update(data)
        source.update(dict.fromkeys(data, "configmap"))
    for var in c.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"])
            source[name] = "value"
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "chat-secrets", var
            if ref["key"] in SECRET_PLACEHOLDERS:
                env[name] = SECRET_PLACEHOLDERS[ref["key"]]
            source[name] = "secret"
        else:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[name] = POD_SAMPLE[{"metadata.name": "POD_NAME", "status.podIP": "POD_IP"}[field]]
            source[name] = "pod"
    return env, source


def unique_resources() -> list[tuple[str, Resource]]:
    """Every resource of the base files and of the three renderings, each distinct one once."""
    seen: dict[str, tuple[str, Resource]] = {}
    for path in sorted((K8S / "base").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for r in load_documents(path):
                seen.setdefault(yaml.safe_dump(r), (f"base/{path.name}", r))
    for target in ("base", *(f"overlays/{o}" for o in OVERLAYS)):
        for r in rendered(target):
            seen.setdefault(yaml.safe_dump(r), (target, r))
    return list(seen.values())


@pytest.fixture(scope="module")
def schemas_read_once() -> Iterator[None]:
    """kubernetes-validate reads and parses its schema files (the shared definitions are
    megabytes) on every call; read each once: 6 s → 1 s, the validation itself unchanged."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kubernetes_validate.utils, "schema_contents", functools.cache(kubernetes_validate.utils.schema_contents))
        yield


@pytest.mark.usefixtures("schemas_read_once")
@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    problems = []
    resources = unique_resources()
    for where, r in resources:
        try:
            kubernetes_validate.validate(r, version, strict=True)  # strict: unknown fields are errors
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
            problems.append(f"{where}: {r['kind']}/{r['metadata']['name']}: {error}")
    assert not problems, "\n".join(problems)
    assert len(resources) > 40


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_set_is_a_real_setting(overlay: str) -> None:
    resources = rendered(f"overlays/{overlay}")
    settings = chat_settings_names()
    for c in pod_containers(one(resources, "Deployment", "chat")):
        env, _ = environment(resources, c)
        names = {v["name"] for v in c.get("env", [])} | set(env)
        unknown = sorted(n for n in names if n.startswith("CHAT_") and n not in settings)
        assert not unknown, f"{c['name']}: not settings of chat/config.py: {unknown}"
        other = sorted(n for n in names if not n.startswith("CHAT_") and n not in OTHER_VARIABLES)
        assert not other, f"{c['name']}: variables nothing reads: {other}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_production_settings_are_complete_and_parse(overlay: str) -> None:
    resources = rendered(f"overlays/{overlay}")
    for c in pod_containers(one(resources, "Deployment", "chat")):  # the node and `chat migrate` alike
        env, source = environment(resources, c)
        assert env["CHAT_ENV"] == "production"
        assert source.get("CHAT_JWT_SECRET") == "secret" or source.get("CHAT_JWT_PUBLIC_KEY") == "secret", "the JWT key must come from the Secret"
        assert source["CHAT_REDIS_URL"] == "secret", "the Redis URL carries the password: Secret only"
        for name in ("CHAT_CASSANDRA_HOSTS", "CHAT_ZOOKEEPER_HOSTS"):
            assert env.get(name), f"{c['name']}: {name} unset"
        settings = config.from_env(env, create_dev_secret=False)  # raises ConfigError with every problem
        assert settings.warnings == (), settings.warnings  # no CHAT_* name that is no setting
        assert settings.environment == "production" and not settings.dev_login_enabled
        assert settings.cassandra_hosts and settings.redis_url and settings.zookeeper_hosts
        if c["name"] == "chat":
            origin = one(resources, "ConfigMap", "chat-config")["data"]["PUBLIC_WS_ORIGIN"]
            assert settings.public_url == f"{origin}/node/{POD_SAMPLE['POD_IP']}"
            assert settings.ws_url.startswith("wss://")
            assert settings.node_id == POD_SAMPLE["POD_NAME"]
    expected = {"dev": "ONE", "prod": "LOCAL_QUORUM"}[overlay]
    assert one(resources, "ConfigMap", "chat-config")["data"]["CHAT_CASSANDRA_CONSISTENCY"] == expected


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_termination_grace_covers_prestop_and_drain(target: str) -> None:
    resources = rendered(target)
    spec = pod_spec(one(resources, "Deployment", "chat"))
    assert spec is not None
    (node,) = [c for c in spec["containers"] if c["name"] == "chat"]
    command = node["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain = float(one(resources, "ConfigMap", "chat-config")["data"]["CHAT_DRAIN_GRACE_S"])
    # chat/server.py bounds the drain at CHAT_DRAIN_GRACE_S + 5 s; then the adapters close.
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain + 5
    # Service links would set CHAT_PORT=tcp://… from the Service `chat`.
    assert spec["enableServiceLinks"] is False


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_data_services_match_what_the_nodes_are_told(target: str) -> None:
    resources = rendered(target)
    data = one(resources, "ConfigMap", "chat-config")["data"]
    cassandra = one(resources, "StatefulSet", "cassandra")
    zookeeper = one(resources, "StatefulSet", "zookeeper")
    # Contact points are pods of the StatefulSets, under their headless Services.
    for hosts, sts in ((data["CHAT_CASSANDRA_HOSTS"], cassandra), (data["CHAT_ZOOKEEPER_HOSTS"], zookeeper)):
        service = one(resources, "Service", sts["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
        names = {f"{sts['metadata']['name']}-{i}.{service['metadata']['name']}" for i in range(sts["spec"]["replicas"])}
        assert {h.split(":")[0] for h in hosts.split("/")[0].split(",")} == names
    # The keyspace's replication names the data centre the Cassandra pods are in, with at most
    # one replica per pod; a quorum level needs three replicas to survive the loss of one.
    env = {e["name"]: e["value"] for e in cassandra["spec"]["template"]["spec"]["containers"][0]["env"]}
    replication = ast.literal_eval(data["CHAT_CASSANDRA_REPLICATION"])
    assert replication["class"] == "NetworkTopologyStrategy"
    assert set(replication) == {"class", env["CASSANDRA_DC"]}
    rf = int(replication[env["CASSANDRA_DC"]])
    assert 1 <= rf <= cassandra["spec"]["replicas"]
    if "QUORUM" in data["CHAT_CASSANDRA_CONSISTENCY"]:
        assert rf >= 3
    assert all(s.split(".")[0] in names_of(cassandra) for s in env["CASSANDRA_SEEDS"].split(","))
    # ZooKeeper: one server line per pod; Parallel, since readiness needs the quorum.
    zenv = {e["name"]: e["value"] for e in zookeeper["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert len(zenv["ZOO_SERVERS"].split()) == zookeeper["spec"]["replicas"]
    assert zookeeper["spec"]["podManagementPolicy"] == "Parallel"


def names_of(sts: Resource) -> set[str]:
    return {f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])}


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_each_pod_is_reachable_at_the_url_it_hands_out(target: str) -> None:
    resources = rendered(target)
    origin = urlsplit(one(resources, "ConfigMap", "chat-config")["data"]["PUBLIC_WS_ORIGIN"])
    assert origin.scheme == "wss" and origin.path == ""
    ingresses = {name: one(resources, "Ingress", name) for name in ("chat", "chat-ws")}
    for ingress in ingresses.values():
        (rule,) = ingress["spec"]["rules"]
        assert rule["host"] == origin.hostname
        assert [t["hosts"] for t in ingress["spec"]["tls"]] == [[origin.hostname]]
        notes = ingress["metadata"]["annotations"]
        assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
        assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
        assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert ingresses["chat-ws"]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/enable-access-log"] == "false"
    paths = {p["path"]: p["backend"]["service"]["name"] for p in ingresses["chat-ws"]["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {"/v1/ws": "chat", "/node/": "chat-router"}
    # The URL a pod hands out, through the router's location, back to that pod's DNS name.
    env, _ = environment(resources, container(resources, "chat", "chat"))
    ws_url = env["CHAT_PUBLIC_URL"] + "/v1/ws"
    conf = one(resources, "ConfigMap", "chat-router")["data"]["nginx.conf"]
    (location,) = re.findall(r'location ~ "([^"]+)"', conf)
    match = re.fullmatch(location.replace("(?<", "(?P<"), urlsplit(ws_url).path)
    assert match, (location, ws_url)
    (upstream,) = re.findall(r"proxy_pass http://(\S+);", conf)
    resolved = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: match.group(m.group(1) or m.group(2)), upstream.split("$is_args")[0])
    namespace = one(resources, "Deployment", "chat")["metadata"]["namespace"]
    dashed = POD_SAMPLE["POD_IP"].replace(".", "-")
    assert resolved == f"{dashed}.chat-pods.{namespace}.svc.cluster.local:8000/v1/ws"
    pods = one(resources, "Service", "chat-pods")["spec"]
    assert pods["clusterIP"] == "None" and pods["selector"] == one(resources, "Deployment", "chat")["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_chat_pods_are_locked_down(target: str) -> None:
    resources = rendered(target)
    spec = pod_spec(one(resources, "Deployment", "chat"))
    assert spec is not None
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
    volumes = {v["name"]: v for v in spec["volumes"]}
    data_dir = one(resources, "ConfigMap", "chat-config")["data"]["CHAT_DATA_DIR"]
    for c in pod_containers(one(resources, "Deployment", "chat")):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert "emptyDir" in volumes["tmp"]
    (node,) = [c for c in spec["containers"] if c["name"] == "chat"]
    mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[data_dir]]
    assert node["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert node["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_only_chat_pods_reach_the_data_services(target: str) -> None:
    resources = rendered(target)
    policies = {r["metadata"]["name"]: r["spec"] for r in resources if r["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    chat_node = {"app.kubernetes.io/name": "chat", "app.kubernetes.io/component": "node"}
    for service in ("cassandra", "zookeeper", "redis"):
        spec = policies[service]
        assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": service}
        for rule in spec["ingress"]:
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{service}: only pods of this namespace"
                assert peer["podSelector"]["matchLabels"] in (chat_node, {"app.kubernetes.io/name": service}), peer
    sources = [peer for rule in policies["chat"]["ingress"] for peer in rule["from"]]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in sources


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS), "monitoring"])
def test_no_secret_is_committed(target: str) -> None:
    resources = rendered(target)
    assert not [r for r in resources if r["kind"] == "Secret"], "Secrets are created out of band, never committed"
    for r in resources:
        if r["kind"] == "ConfigMap":
            assert not set(r["data"]) & set(SECRET_PLACEHOLDERS), r["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_each_chat_pod_once_with_the_token_the_node_expects(overlay: str) -> None:
    """k8s/monitoring's ServiceMonitor (a custom resource: not in the base, which must apply on a
    cluster without the Prometheus Operator) against what an overlay deploys."""
    resources = rendered(f"overlays/{overlay}")
    (monitor,) = [r for r in rendered("monitoring") if r["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    namespace = one(resources, "Deployment", "chat")["metadata"]["namespace"]
    assert monitor["metadata"]["namespace"] == namespace and spec["namespaceSelector"] == {"matchNames": [namespace]}
    # The selector picks the headless Service alone (its endpoints include not-ready pods).
    services = [r for r in resources if r["kind"] == "Service" and r["metadata"]["namespace"] == namespace]
    selected = [r for r in services if spec["selector"]["matchLabels"].items() <= r["metadata"].get("labels", {}).items()]
    assert [r["metadata"]["name"] for r in selected] == ["chat-pods"]
    (service,) = selected
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["metadata"]["labels"][spec["jobLabel"]] == "chat"  # job="chat", as the alerts expect
    (endpoint,) = spec["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The token Prometheus sends is the one the node reads.
    credentials = endpoint["authorization"]["credentials"]
    (node,) = [c for c in pod_containers(one(resources, "Deployment", "chat")) if c["name"] == "chat"]
    env = {v["name"]: v for v in node["env"]}
    assert env["CHAT_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == credentials["name"] == "chat-secrets"
    assert env["CHAT_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == credentials["key"]
    # And the network lets the Prometheus namespace in, on the node's port and nowhere else.
    policy = one(resources, "NetworkPolicy", "chat")["spec"]
    monitoring = [rule for rule in policy["ingress"] if {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in rule["from"]]
    assert [rule["ports"] for rule in monitoring] == [[{"port": 8000, "protocol": "TCP"}]]
    # Only the ServiceMonitor scrapes: no annotation-based scraping beside it (double samples).
    assert "prometheus.io" not in yaml.safe_dump_all(resources)
