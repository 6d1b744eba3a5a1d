"""IP management as installed: the chart with aws.ipManagement on, a real API server, EC2 played by moto.

The chart renders with `aws.enabled` and `aws.ipManagement.enabled`; the controller's
container gets moto's endpoint and test credentials through `controller.extraEnv`, as
a user would give a proxy or a region. Nodes carry providerIDs of moto's instances;
the test writes each Pod's network-status as Multus does once the Pod's sandbox is up.
Then: serve adds the readiness gate at admission, the controller assigns the address
to the ENI behind eth1 and sets the condition through the real status subresource
(a strategic merge by condition type, with the RBAC the chart grants and no more).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ec2 import (
    CREDENTIALS,
    Ec2Proxy,
    Node,
    add_node,
    attach_eni,
    client,
    ipvlan_nad,
    moto_server,
    vpc,
)
from tests.envtest.chart import render, served_at
from tests.envtest.controlplane import ControlPlane, free_port
from tests.envtest.test_chart_installed import SERVED, SERVICE_HOST, eventually, install, release_pods
from tests.support import namespace

CONTROL_PLANE = {"hosts": {SERVICE_HOST: "127.0.0.1"}, "controller_manager": True}
CONDITION = "multihome.io/secondary-ips"
NAD = ipvlan_nad(
    "dp",
    "team-a",
    {"type": "whereabouts", "range": "10.0.4.0/24", "range_start": "10.0.4.70", "range_end": "10.0.4.90"},
)


@pytest.fixture(scope="module")
def ec2() -> Iterator[tuple[Any, Ec2Proxy, dict[str, Node]]]:
    """moto's EC2 with node-1 (eth1 tagged no_manage) and node-2 (eth1 untagged)."""
    with moto_server() as url:
        proxy = Ec2Proxy(url)
        api = client(url)
        primary, multus = vpc(api, "10.0.0.0/16", "10.0.1.0/24", "10.0.4.0/24")
        nodes = {name: add_node(api, name, primary) for name in ("node-1", "node-2")}
        attach_eni(api, nodes["node-1"], multus, 1, "10.0.4.10")
        attach_eni(api, nodes["node-2"], multus, 1, "10.0.4.20", tagged=False)
        yield api, proxy, nodes
        proxy.close()


@pytest.fixture(scope="module")
def installed(
    control_plane: ControlPlane,
    ec2: tuple[Any, Ec2Proxy, dict[str, Node]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlane]:
    if os.geteuid() != 0:
        pytest.fail("the chart tier runs containers as a kubelet does (mount namespaces): run it as root")
    _, proxy, nodes = ec2
    plane, port, controller_port = control_plane, free_port(), free_port()
    environment = {**CREDENTIALS, "AWS_ENDPOINT_URL_EC2": proxy.url}
    values = {
        "aws": {
            "enabled": True,
            "region": CREDENTIALS["AWS_REGION"],
            "ipManagement": {"enabled": True, "sweepInterval": 10},
        },
        "controller": {
            "extraEnv": [{"name": k, "value": v} for k, v in environment.items() if k != "AWS_REGION"]
        },
    }
    docs = served_at(render(values, api_versions=SERVED), SERVICE_HOST, port)
    install(plane, docs)
    for node in nodes.values():
        plane.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node.name},
                "spec": {"providerID": node.provider_id},
            }
        )
    workdir = tmp_path_factory.mktemp("kubelet")
    with release_pods(plane, docs, workdir, port, controller_port) as (_, pod, _, _):
        eventually(lambda: pod.ready, 120, "the webhook is Ready")
        plane.apply(namespace("team-a", **{"multihome.io/profile": "dataplane"}), NAD)
        eventually(
            lambda: (
                plane.kubectl("get", "serviceaccount", "default", "-n", "team-a", check=False).returncode == 0
            )
        )
        yield plane


def _create(plane: ControlPlane, name: str, node: str) -> dict[str, Any]:
    """A Pod that names dp itself, scheduled on `node`, once the webhook knows dp (watch lag)."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "annotations": {"k8s.v1.cni.cncf.io/networks": "dp"},
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
    }
    text = json.dumps(manifest)

    def gated() -> bool:
        done = plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=text)
        return bool(json.loads(done.stdout)["spec"].get("readinessGates"))

    eventually(gated, what="the webhook knows dp and adds the readiness gate")
    created: dict[str, Any] = json.loads(plane.kubectl("create", "-o", "json", "-f", "-", stdin=text).stdout)
    return created


def _multus_reports(plane: ControlPlane, name: str, address: str) -> None:
    """What Multus writes once the sandbox is up: network-status with the Pod's address on net1."""
    status = [
        {"name": "aws-cni", "interface": "eth0", "ips": ["10.0.1.50"], "default": True},
        {"name": "team-a/dp", "interface": "net1", "ips": [address]},
    ]
    plane.kubectl(
        "annotate", "pod", name, "-n", "team-a", f"k8s.v1.cni.cncf.io/network-status={json.dumps(status)}"
    )


def _condition(plane: ControlPlane, name: str) -> tuple[str, str] | None:
    conditions = plane.get("pod", name, "-n", "team-a").get("status", {}).get("conditions", [])
    found = [(c["status"], c["reason"]) for c in conditions if c["type"] == CONDITION]
    return found[0] if found else None


def test_the_gate_opens_once_the_address_is_on_its_eni(
    installed: ControlPlane, ec2: tuple[Any, Ec2Proxy, dict[str, Node]]
) -> None:
    api, proxy, nodes = ec2
    created = _create(installed, "upf-0", "node-1")
    assert created["spec"]["readinessGates"] == [{"conditionType": CONDITION}]
    # A condition another component wrote first (the scheduler's): the controller's merge keeps it.
    installed.kubectl(
        "patch",
        "pod",
        "upf-0",
        "-n",
        "team-a",
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps({"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}),
    )
    _multus_reports(installed, "upf-0", "10.0.4.71")
    eventually(lambda: _condition(installed, "upf-0") == ("True", "Assigned"), 60, "the condition turns True")
    types = {c["type"] for c in installed.get("pod", "upf-0", "-n", "team-a")["status"]["conditions"]}
    assert {"PodScheduled", CONDITION} <= types
    eni_id = nodes["node-1"].enis[1]["NetworkInterfaceId"]
    (eni,) = api.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"]
    assert "10.0.4.71" in {a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"]}
    assert proxy.calls["AssignPrivateIpAddresses"] >= 1


def test_an_untagged_eni_is_never_written_and_the_pod_is_told_why(
    installed: ControlPlane, ec2: tuple[Any, Ec2Proxy, dict[str, Node]]
) -> None:
    api, _, nodes = ec2
    _create(installed, "upf-1", "node-2")
    _multus_reports(installed, "upf-1", "10.0.4.72")
    eventually(
        lambda: _condition(installed, "upf-1") == ("False", "ENINotManaged"), 60, "the condition says why"
    )
    eni_id = nodes["node-2"].enis[1]["NetworkInterfaceId"]
    (eni,) = api.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"]
    assert [a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"]] == ["10.0.4.20"]
