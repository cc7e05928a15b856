"""The deployment examples keep their hardening: a numeric user in the image, a pod that runs as
non-root on a read-only filesystem without capabilities, static membership from the pod name, and
a NetworkPolicy that opens only the metrics port and the dependencies."""

from __future__ import annotations

import re
from typing import Any

import yaml

from harness.process import REPO


def _documents() -> dict[str, Any]:
    text = (REPO / "deploy" / "kubernetes" / "statefulset.yaml").read_text()
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def test_the_image_runs_as_a_numeric_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", (REPO / "deploy" / "Dockerfile").read_text(), re.MULTILINE)
    assert users and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]), users


def test_the_pod_is_hardened_and_uses_its_name_as_instance_id() -> None:
    pod = _documents()["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    env = {item["name"]: item for item in container["env"]}
    assert env["LEADS_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "LEADS_TRANSACTIONAL_ID" not in env
    assert all("value" not in env[name] for name in ("LEADS_KAFKA_SASL_PASSWORD", "LEADS_REDIS_URL"))


def test_the_network_policy_opens_only_metrics_and_the_dependencies() -> None:
    policy = _documents()["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [port["port"] for rule in policy["ingress"] for port in rule["ports"]] == [9400]
    egress = sorted({port["port"] for rule in policy["egress"] for port in rule["ports"]})
    assert egress == [53, 6380, 8081, 9093, 26379]
