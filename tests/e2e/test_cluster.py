"""The whole flow on a real cluster where multihome is installed (run with `make e2e`).

Needs MULTIHOME_E2E_KUBECONFIG (a kind or EKS cluster with multihome's chart and the
NetworkAttachmentDefinition CRD installed) and kubectl on PATH. Everything created
here is labelled `multihome.io/e2e=true` and deleted afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

KUBECONFIG = os.environ.get("MULTIHOME_E2E_KUBECONFIG", "")
KUBECTL = shutil.which("kubectl") or "kubectl"


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    """`make e2e` is for a real cluster: without one it fails and says what it needs."""
    if not KUBECONFIG or shutil.which("kubectl") is None:
        pytest.fail(
            "make e2e needs MULTIHOME_E2E_KUBECONFIG (a cluster with multihome installed) and kubectl on PATH"
        )


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", KUBECONFIG, *args],
        input=stdin,
        text=True,
        capture_output=True,
        check=check,
        timeout=60,
    )


def apply(*objects: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects), check=check)


@pytest.fixture(scope="module")
def names() -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    created = {"namespace": f"mh-e2e-{suffix}", "rule": f"mh-e2e-{suffix}", "profile": f"e2e-{suffix}"}
    yield created
    kubectl("delete", "attachmentrule", created["rule"], "--ignore-not-found", "--wait=false", check=False)
    kubectl("delete", "namespace", created["namespace"], "--ignore-not-found", "--wait=false", check=False)


def test_a_labelled_namespace_gets_its_networks_and_the_vpc_cni_is_refused(names: dict[str, str]) -> None:
    namespace = names["namespace"]
    labels = {"multihome.io/e2e": "true", "multihome.io/profile": names["profile"]}
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
    config = {
        "cniVersion": "0.4.0",
        "type": "ipvlan",
        "master": "eth1",
        "ipam": {"type": "host-local", "subnet": "10.99.0.0/24"},
    }
    apply(
        {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "e2e-ipvlan", "namespace": namespace},
            "spec": {"config": json.dumps(config)},
        }
    )
    apply(
        {
            "apiVersion": "multihome.io/v1alpha1",
            "kind": "AttachmentRule",
            "metadata": {"name": names["rule"], "labels": {"multihome.io/e2e": "true"}},
            "spec": {
                "namespaceSelector": {"matchLabels": {"multihome.io/profile": names["profile"]}},
                "networks": [{"name": "e2e-ipvlan"}],
            },
        }
    )
    time.sleep(2)  # the rule reaches every replica's watch
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "e2e", "namespace": namespace},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}]},
    }
    created = json.loads(
        kubectl("create", "-f", "-", "--dry-run=server", "-o", "json", stdin=json.dumps(pod)).stdout
    )
    assert created["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == "e2e-ipvlan"
    assert created["metadata"]["annotations"]["multihome.io/injected-by"] == names["rule"]

    vpc = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "e2e-vpc", "namespace": namespace},
        "spec": {"config": '{"cniVersion": "0.4.0", "type": "aws-cni"}'},
    }
    refused = apply(vpc, check=False)
    assert refused.returncode != 0
    assert "is the Amazon VPC CNI" in refused.stderr
