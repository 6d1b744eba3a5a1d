"""IP management: Pods' secondary addresses on their ENIs, against moto's EC2 and a test API server.

EC2 is moto's server behind the counting proxy (tests/ec2.py); the cluster is the test
API server (tests/fake_apiserver.py) holding Nodes and Pods with network-status as
Multus writes it. The clock of the grace period is the test's.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from policies.controllers.events import EventRecorder
from policies.controllers.ip_manager import CONDITION, IpManager
from policies.controllers.manager import Controller
from policies.controllers.settings import ControllerSettings
from tests.ec2 import (
    Ec2Proxy,
    Node,
    add_node,
    attach_eni,
    client,
    ipvlan_nad,
    moto_server,
    network_status,
    use_ec2,
    vpc,
)
from tests.fake_apiserver import FakeApiServer
from webhook.aws.ec2 import Ec2Reader, ec2_client
from webhook.aws.iam import IP_ACTIONS, READ_ACTIONS, iam_policy
from webhook.cluster.files import FileState
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.cluster.live import LiveState
from webhook.multus.annotations import NETWORK_STATUS
from webhook.telemetry.metrics import Metrics

PODS = "/api/v1/pods"
NAD = ipvlan_nad(
    "dp",
    "team-a",
    {"type": "whereabouts", "range": "10.0.4.0/24", "range_start": "10.0.4.70", "range_end": "10.0.4.90"},
)


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@dataclass
class World:
    ec2: Any
    proxy: Ec2Proxy
    api: FakeApiServer
    manager: IpManager
    nodes: dict[str, Node]
    now: list[float]
    port: int  # the test API server's

    def eni(self, node: str) -> dict[str, Any]:
        eni_id = self.nodes[node].enis[1]["NetworkInterfaceId"]
        found: dict[str, Any] = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])[
            "NetworkInterfaces"
        ][0]
        return found

    def secondaries(self, node: str) -> set[str]:
        return {a["PrivateIpAddress"] for a in self.eni(node)["PrivateIpAddresses"] if not a["Primary"]}

    def pod(self, name: str, node: str, address: str, network: str = "team-a/dp") -> None:
        self.api.put(
            PODS,
            {
                "metadata": {
                    "name": name,
                    "namespace": "team-a",
                    "annotations": {NETWORK_STATUS: network_status(network, address)},
                },
                "spec": {"nodeName": node},
            },
        )

    def condition(self, name: str) -> tuple[str, str]:
        obj = self.api.collections[PODS].objects[("team-a", name)]
        (found,) = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == CONDITION]
        return found["status"], found["reason"]


@pytest.fixture
def world(moto: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    """node-1 and node-3 with a tagged eth1, node-2 with an untagged one, node-4 with none."""
    proxy = Ec2Proxy(moto)
    use_ec2(monkeypatch, proxy, tmp_path)
    ec2 = client(moto)
    primary, multus = vpc(ec2, "10.0.0.0/16", "10.0.1.0/24", "10.0.4.0/24")
    nodes = {name: add_node(ec2, name, primary) for name in ("node-1", "node-2", "node-3", "node-4")}
    # On node-1: .85 in the NAD's range that no Pod holds (stale), .99 outside any NAD's range.
    attach_eni(ec2, nodes["node-1"], multus, 1, "10.0.4.10", secondary=("10.0.4.85", "10.0.4.99"))
    attach_eni(ec2, nodes["node-2"], multus, 1, "10.0.4.20", tagged=False, secondary=("10.0.4.86",))
    attach_eni(ec2, nodes["node-3"], multus, 1, "10.0.4.30")
    api = FakeApiServer()
    for node in nodes.values():
        api.put("/api/v1/nodes", {"metadata": {"name": node.name}, "spec": {"providerID": node.provider_id}})
    port = api.serve()
    kube = HttpKubeApi(Endpoint.load(api.kubeconfig(tmp_path, port)))
    now = [1000.0]
    reader = Ec2Reader(ec2_client(), ttl=0)
    manager = IpManager(
        kube,
        FileState([("nad", NAD)]),
        reader,
        grace=60,
        clock=lambda: now[0],
        events=EventRecorder(kube, "test"),
    )
    yield World(ec2, proxy, api, manager, nodes, now, port)
    api.close()
    proxy.close()


def test_addresses_go_on_the_right_eni_and_the_gate_opens(world: World) -> None:
    world.pod("a", "node-1", "10.0.4.71")
    world.pod("b", "node-1", "10.0.4.72")
    world.pod("c", "node-2", "10.0.4.73")
    world.pod("d", "node-4", "10.0.4.74")
    report = world.manager.run_once()
    assert report.assigned == 2 and report.errors == []
    assert world.proxy.calls["AssignPrivateIpAddresses"] == 1  # both of node-1's in one call
    assert {"10.0.4.71", "10.0.4.72"} <= world.secondaries("node-1")
    assert world.condition("a") == ("True", "Assigned") and world.condition("b") == ("True", "Assigned")
    assert world.condition("c") == ("False", "ENINotManaged")
    assert world.condition("d") == ("False", "NoENIForMaster")
    assert world.secondaries("node-2") == {"10.0.4.86"}  # the untagged ENI is never written
    events = {
        (e["regarding"]["name"], e["type"], e["reason"])
        for e in world.api.collections["/apis/events.k8s.io/v1/events"].objects.values()
    }
    assert {
        ("a", "Normal", "Assigned"),
        ("c", "Warning", "ENINotManaged"),
        ("d", "Warning", "NoENIForMaster"),
    } <= events


def test_a_stale_address_is_swept_after_the_grace_and_nothing_else_is(world: World) -> None:
    world.pod("a", "node-1", "10.0.4.71")
    world.manager.run_once()
    assert "10.0.4.85" in world.secondaries("node-1")  # unheld since just now: within the grace
    world.now[0] += 61
    report = world.manager.run_once()
    assert report.unassigned == 1
    left = world.secondaries("node-1")
    assert "10.0.4.85" not in left and {"10.0.4.71", "10.0.4.99"} <= left  # outside every range: untouched
    assert world.eni("node-1")["PrivateIpAddress"] == "10.0.4.10"  # the primary, never
    assert world.secondaries("node-2") == {"10.0.4.86"}  # unheld, but on an untagged ENI


def test_a_deleted_pods_address_waits_out_the_grace_and_a_returning_pod_keeps_it(world: World) -> None:
    world.pod("web-0", "node-1", "10.0.4.71")
    world.manager.run_once()
    world.api.delete(PODS, "team-a", "web-0")
    world.manager.run_once()
    world.now[0] += 30
    world.pod("web-0", "node-1", "10.0.4.71")  # the StatefulSet's Pod back, with its address
    world.manager.run_once()
    world.now[0] += 61
    world.manager.run_once()
    assert "10.0.4.71" in world.secondaries("node-1")
    world.api.delete(PODS, "team-a", "web-0")
    world.manager.run_once()
    world.now[0] += 61
    world.manager.run_once()
    assert "10.0.4.71" not in world.secondaries("node-1")


def test_an_address_that_moved_nodes_is_reassigned(world: World) -> None:
    world.pod("a", "node-1", "10.0.4.71")
    world.manager.run_once()
    world.api.delete(PODS, "team-a", "a")
    world.pod("a", "node-3", "10.0.4.71")  # a StatefulSet's Pod again, on another node, same address
    world.manager.run_once()
    assert "10.0.4.71" in world.secondaries("node-3") and world.condition("a") == ("True", "Assigned")
    # EC2 moves an address assigned with AllowReassignment; moto copies it. The sweep takes a
    # copy left on an ENI whose Pods do not hold it, after the grace, so both end the same.
    world.now[0] += 61
    world.manager.run_once()
    assert "10.0.4.71" not in world.secondaries("node-1") and "10.0.4.71" in world.secondaries("node-3")


def test_forty_pods_at_once_are_one_call(world: World) -> None:
    for i in range(40):  # the NAD's .70-.90 and, past it, addresses it does not give: 21 in range
        world.pod(f"p{i}", "node-1" if i % 2 else "node-3", f"10.0.4.{70 + i}")
    report = world.manager.run_once()
    assert world.proxy.calls["AssignPrivateIpAddresses"] == 2  # one per ENI
    assert report.assigned == 20  # p15 holds .85, which node-1's eth1 has already
    assert all(world.condition(f"p{i}") == ("True", "Assigned") for i in range(21))
    assert all(
        world.condition(f"p{i}")[1] == "Pending" for i in range(21, 40)
    )  # outside the range: never assigned


def test_throttled_ec2_is_waited_through_and_converges(world: World) -> None:
    world.pod("a", "node-1", "10.0.4.71")
    world.proxy.faults.throttle_until = time.monotonic() + 1.5
    report = world.manager.run_once()
    assert report.errors == [] and world.condition("a") == ("True", "Assigned")
    assert sum(n for (action, status), n in world.proxy.answered.items() if status == 503) >= 1


def test_ec2_unavailable_closes_the_gate_with_the_reason(world: World) -> None:
    world.pod("a", "node-1", "10.0.4.71")
    world.proxy.faults.refused.add("DescribeInstances")
    report = world.manager.run_once()
    assert report.errors and world.condition("a") == ("False", "EC2Unavailable")


def test_ipv6_addresses_too_and_the_iam_policy_is_exactly_the_calls_made(world: World) -> None:
    """A dual-stack subnet: an IPv6 address on its ENI, moved with its Pod (EC2 cannot reassign IPv6)."""
    ec2 = world.ec2
    vpc_id = ec2.create_vpc(CidrBlock="10.2.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]["VpcId"]
    block = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"]
    v6 = list(ipaddress.IPv6Network(block).subnets(new_prefix=64))[1]
    primary = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.2.1.0/24")["Subnet"]["SubnetId"]
    multus = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.2.4.0/24", Ipv6CidrBlock=str(v6))["Subnet"][
        "SubnetId"
    ]
    nodes = [add_node(ec2, name, primary) for name in ("node-6", "node-7")]
    for i, node in enumerate(nodes):
        attach_eni(ec2, node, multus, 1, f"10.2.4.{10 + i}")
        world.api.put(
            "/api/v1/nodes", {"metadata": {"name": node.name}, "spec": {"providerID": node.provider_id}}
        )
    ipam = {"type": "whereabouts", "range": str(v6), "range_start": str(v6[70]), "range_end": str(v6[90])}
    dual = IpManager(
        world.manager.api,
        FileState([("nad", NAD), ("nad6", ipvlan_nad("dp6", "team-a", ipam))]),
        world.manager.reader,
        grace=0,
    )
    address = v6[71].exploded  # as a CNI may write it: not the canonical form
    world.pod("a", "node-1", "10.0.4.71")
    world.pod("b", "node-6", address, "team-a/dp6")

    def ipv6_of(node: Node) -> list[str]:
        eni_id = node.enis[1]["NetworkInterfaceId"]
        (eni,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"]
        return [str(ipaddress.ip_address(a["Ipv6Address"])) for a in eni.get("Ipv6Addresses", [])]

    dual.run_once()  # assigns both families; sweeps node-1's stale .85 (no grace here)
    assert ipv6_of(nodes[0]) == [str(v6[71])] and world.condition("b") == ("True", "Assigned")
    world.api.delete(PODS, "team-a", "b")
    world.pod("b", "node-7", address, "team-a/dp6")
    dual.run_once()
    assert ipv6_of(nodes[0]) == [] and ipv6_of(nodes[1]) == [str(v6[71])]
    made = {f"ec2:{action}" for action in world.proxy.calls}
    (reads, writes) = iam_policy(ip_management=True)["Statement"]
    assert made == set(READ_ACTIONS) | set(IP_ACTIONS) == set(reads["Action"]) | set(writes["Action"])


def test_a_pod_recreated_under_its_name_gets_its_condition_again(world: World) -> None:
    world.pod("web-0", "node-1", "10.0.4.71")
    world.manager.run_once()
    assert world.condition("web-0") == ("True", "Assigned")
    world.api.delete(PODS, "team-a", "web-0")
    world.pod("web-0", "node-1", "10.0.4.71")  # a new Pod: a new uid, no conditions yet
    world.manager.run_once()
    assert world.condition("web-0") == ("True", "Assigned")
    calls = world.proxy.calls["AssignPrivateIpAddresses"]
    world.manager.run_once()  # nothing changed: no EC2 write, and no condition written again
    assert world.proxy.calls["AssignPrivateIpAddresses"] == calls


@pytest.mark.parametrize(("aws", "calls_ec2"), [(False, False), (True, True)])
def test_the_controller_calls_ec2_only_with_aws_on(
    world: World, tmp_path: Path, aws: bool, calls_ec2: bool
) -> None:
    world.pod("a", "node-1", "10.0.4.71")
    for path in ("/api/v1/namespaces", "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions"):
        world.api.put(path, {"metadata": {"name": "team-a"}} if "namespaces" in path else NAD)
    kube = HttpKubeApi(Endpoint.load(world.api.kubeconfig(tmp_path, world.port)))
    live = LiveState(kube, watch_timeout=5).start()
    settings = ControllerSettings(aws=aws, ip_management=aws, reconcile=False, dry_run=True)
    controller = Controller(settings, kube, live, Metrics()).start()
    try:
        deadline = time.monotonic() + 12  # the IP pass starts 5 s after leading, the AWS audit 10 s
        while time.monotonic() < deadline and not world.proxy.calls:
            time.sleep(0.2)
        assert bool(world.proxy.calls) is calls_ec2, world.proxy.calls
    finally:
        controller.stop()
        live.stop(timeout=1.0)


def test_a_leader_lost_mid_pass_is_redone_by_the_next_without_doubling_or_taking(world: World) -> None:
    for name, node, address in (("a", "node-1", "10.0.4.71"), ("b", "node-3", "10.0.4.72")):
        world.pod(name, node, address)
    answers = iter([True, False])  # leads for the first ENI's write, has lost the Lease by the second's
    first = IpManager(
        world.manager.api, world.manager.state, world.manager.reader, is_leader=lambda: next(answers, False)
    )
    first.run_once()
    done = ("10.0.4.71" in world.secondaries("node-1"), "10.0.4.72" in world.secondaries("node-3"))
    assert sorted(done) == [False, True]  # one ENI written, the other cut short
    # The next leader knows nothing of the first: it reads EC2 and the cluster, then writes.
    second = IpManager(world.manager.api, world.manager.state, world.manager.reader, grace=0)
    report = second.run_once()
    assert report.assigned == 1 and report.unassigned == 1  # the one cut short; the stale .85, not a live one
    assert world.proxy.calls["AssignPrivateIpAddresses"] == 2  # what the first wrote was not written again
    assert "10.0.4.71" in world.secondaries("node-1") and "10.0.4.72" in world.secondaries("node-3")
    assert world.condition("a") == ("True", "Assigned") and world.condition("b") == ("True", "Assigned")


def test_ec2_throttled_for_twenty_seconds_while_pods_arrive_then_converges(world: World) -> None:
    world.proxy.faults.throttle_until = time.monotonic() + 20
    passes = 0
    for i in range(6):
        world.pod(f"p{i}", "node-1", f"10.0.4.{71 + i}")
        world.manager.run_once()
        passes += 1
    while any(world.condition(f"p{i}") != ("True", "Assigned") for i in range(6)):
        assert passes < 20, "not converged"
        world.manager.run_once()
        passes += 1
    assert {f"10.0.4.{71 + i}" for i in range(6)} <= world.secondaries("node-1")
    assert sum(n for (_, status), n in world.proxy.answered.items() if status == 503) >= 2
