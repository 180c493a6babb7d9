"""deploy/k8s: every core object validated against the Kubernetes schemas
(kubernetes-validate, offline, strict), and the properties the operations
issue asks for checked one by one (KEDA's CRDs by structure)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from reka_ingest.core.queues import UPLOAD_QUEUE
from tests.deploy.support import K8S, load_all, load_yaml

KUBERNETES_VERSION = "1.30.0"
CRD_KINDS = {"ScaledObject", "TriggerAuthentication"}


def objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_all(path)]


def by_kind_name() -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects() if "metadata" in o}


def deployment(component: str) -> dict[str, Any]:
    return by_kind_name()[("Deployment", f"reka-ingest-{component}")]


def container(obj: dict[str, Any]) -> dict[str, Any]:
    (c,) = obj["spec"]["template"]["spec"]["containers"]
    return dict(c)


def secret_env(c: dict[str, Any]) -> dict[str, str]:
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in c.get("env", [])
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }


@pytest.mark.parametrize(
    "obj",
    [o for o in objects() if o["kind"] not in CRD_KINDS | {"Kustomization"}],
    ids=lambda o: f"{o['kind']}/{o['metadata']['name']}",
)
def test_core_objects_match_the_kubernetes_schema(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kust = load_yaml(K8S / "kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kust["resources"]) == files
    assert kust["namespace"] == "reka-ingest"
    assert all(
        o["metadata"].get("namespace", "reka-ingest") == "reka-ingest"
        for o in objects()
        if o["kind"] != "Kustomization"
    )


def test_workers_scale_on_the_upload_queue_with_keda() -> None:
    objs = by_kind_name()
    scaled = objs[("ScaledObject", "reka-ingest-worker")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "reka-ingest-worker")
    assert ("Deployment", target["name"]) in objs
    # At least one worker always: the control queue (polls, sweeps) needs it.
    assert scaled["spec"]["minReplicaCount"] >= 1
    assert scaled["spec"]["maxReplicaCount"] > scaled["spec"]["minReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == UPLOAD_QUEUE
    assert int(trigger["metadata"]["listLength"]) >= 1
    auth = objs[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"]) == ("password", "reka-ingest-secrets")
    # KEDA owns the replica count: the Deployment does not set one.
    assert "replicas" not in deployment("worker")["spec"]


def test_exactly_one_beat_and_never_two_during_a_rollout() -> None:
    beat = deployment("beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    assert container(beat)["args"] == ["beat"]


def test_the_watcher_and_the_workers_share_a_read_write_many_volume() -> None:
    pvc = by_kind_name()[("PersistentVolumeClaim", "reka-ingest-data")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for component in ("watcher", "worker"):
        dep = deployment(component)
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in volumes.values()
            if "persistentVolumeClaim" in v
        ]
        assert claims == ["reka-ingest-data"]
        mounts = {m["mountPath"] for m in container(dep)["volumeMounts"]}
        assert "/data" in mounts
    watcher = deployment("watcher")
    assert watcher["spec"]["replicas"] == 1
    assert container(watcher)["args"] == ["watch"]


def test_flower_takes_its_auth_from_the_secret() -> None:
    flower = container(deployment("flower"))
    assert secret_env(flower)["INGEST_FLOWER_BASIC_AUTH"] == "INGEST_FLOWER_BASIC_AUTH"
    plain = {e["name"]: e.get("value") for e in flower["env"] if "value" in e}
    assert plain["INGEST_FLOWER_HOST"] == "0.0.0.0"  # noqa: S104 - checks the config, binds nothing
    assert "INGEST_FLOWER_BASIC_AUTH" not in plain


def test_settings_come_from_a_configmap_and_secrets_from_a_secret() -> None:
    objs = by_kind_name()
    config = objs[("ConfigMap", "reka-ingest-config")]["data"]
    assert not any(
        word in key
        for key in config
        for word in ("KEY", "PASSWORD", "AUTH", "URL")
        if key != "REKA_API_BASE_URL"
    )
    secret = objs[("Secret", "reka-ingest-secrets")]["stringData"]
    for dep in [o for o in objects() if o["kind"] in ("Deployment", "Job")]:
        c = container(dep)
        assert {"configMapRef": {"name": "reka-ingest-config"}} in c["envFrom"]
        for name, key in secret_env(c).items():
            assert key in secret, (dep["metadata"]["name"], name)
        # No secret value written inline.
        for e in c.get("env", []):
            assert (
                not any(w in e["name"] for w in ("KEY", "PASSWORD", "_URL", "AUTH"))
                or "valueFrom" in e
            )
    assert "REKA_API_KEY" in secret_env(container(deployment("worker")))


def test_every_pod_runs_as_non_root_with_a_healthcheck() -> None:
    for dep in [o for o in objects() if o["kind"] in ("Deployment", "Job")]:
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        c = container(dep)
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        if dep["kind"] == "Deployment":
            assert "livenessProbe" in c or "readinessProbe" in c, dep["metadata"]["name"]
    assert container(deployment("worker"))["livenessProbe"]["exec"]["command"] == [
        "reka-ingest",
        "health",
        "--worker",
    ]


def test_a_worker_may_finish_its_batch_before_it_is_killed() -> None:
    assert deployment("worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 120
