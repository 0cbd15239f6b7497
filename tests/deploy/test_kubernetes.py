"""The Kustomize base and overlays render, pass the Kubernetes schemas, and hang together."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
# The oldest Kubernetes the files are written for (HPA v2, PDB policy/v1).
K8S_VERSION = "1.29"


def render(overlay: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: cannot render the Kustomize overlays")
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_overlays_exist() -> None:
    assert {"cpu", "gpu"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_and_passes_the_kubernetes_schemas(overlay: str) -> None:
    docs = render(overlay)
    builtin = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
    assert len(builtin) >= 12
    for doc in builtin:
        # strict: a misspelt field (e.g. "readinesProbe") is an error, not silently ignored
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_an_invalid_manifest_is_caught_by_the_validator() -> None:
    deployment = by_kind(render("cpu"), "Deployment")["inferd-gateway"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_role_is_deployed_with_probes_resources_and_a_budget(overlay: str) -> None:
    docs = render(overlay)
    deployments = by_kind(docs, "Deployment")
    assert {"inferd-gateway", "inferd-worker", "inferd-engine"} <= set(deployments)
    budgets = by_kind(docs, "PodDisruptionBudget")
    for name, dep in deployments.items():
        assert dep["metadata"]["namespace"] == "inferd"
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert any(b["spec"]["selector"]["matchLabels"].items() <= labels.items()
                   for b in budgets.values()), f"{name} has no PodDisruptionBudget"
        for container in dep["spec"]["template"]["spec"]["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"]
            assert container["livenessProbe"]["httpGet"]["path"] == "/health"
            assert container["readinessProbe"]["httpGet"]["path"] in ("/ready", "/health")
    for name in ("inferd-gateway", "inferd-worker", "inferd-engine"):
        spec = deployments[name]["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        container = spec["containers"][0]
        assert container["args"] == [name.removeprefix("inferd-")]
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        refs = {r["secretRef"]["name"] for r in container["envFrom"] if "secretRef" in r}
        assert refs == {"inferd-secrets"}


def test_the_secret_holds_what_the_roles_read() -> None:
    secret = by_kind(render("cpu"), "Secret")["inferd-secrets"]
    assert set(secret["stringData"]) >= {"INFERD_DATABASE_URL", "INFERD_BROKER_URL",
                                         "INFERD_REDIS_URL", "INFERD_ADMIN_KEY"}


def test_gateway_scales_on_cpu_behind_a_service() -> None:
    docs = render("cpu")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["inferd-gateway"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "inferd-gateway"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    service = by_kind(docs, "Service")["inferd-gateway"]
    pod_labels = by_kind(docs, "Deployment")["inferd-gateway"]["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= pod_labels["labels"].items()


def test_workers_scale_on_the_rabbitmq_queue_length() -> None:
    from inferd.jobs.broker import queue_name

    docs = render("cpu")
    scaled = by_kind(docs, "ScaledObject")["inferd-worker"]
    auth = by_kind(docs, "TriggerAuthentication")
    # KEDA's CRD is not in the Kubernetes schemas: check the fields KEDA requires
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] in by_kind(docs, "Deployment")
    assert 0 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "rabbitmq"
        meta = trigger["metadata"]
        assert meta["mode"] == "QueueLength" and int(meta["value"]) > 0
        assert meta["queueName"] == queue_name("inferd", "smollm2-135m-instruct")
        assert trigger["authenticationRef"]["name"] in auth
    (target,) = auth["inferd-rabbitmq"]["spec"]["secretTargetRef"]
    assert target["parameter"] == "host" and target["key"] == "INFERD_BROKER_URL"


def test_migration_job_and_gpu_engine() -> None:
    job = by_kind(render("cpu"), "Job")["inferd-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    gpu = by_kind(render("gpu"), "Deployment")
    assert "inferd-vllm" not in by_kind(render("cpu"), "Deployment")
    limits = gpu["inferd-vllm"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert limits["limits"]["nvidia.com/gpu"] == "1"
