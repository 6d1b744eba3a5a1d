"""The AWS side (MH060-MH066) against EC2 played by moto's server, and `aws iam-policy`.

EC2 is moto in server mode on loopback (tests/ec2.py), reached by the SDK through
AWS_ENDPOINT_URL_EC2 behind a proxy that counts calls and plays throttling, refusals
and an endpoint that is down. The cluster is files, as `kubectl get -o yaml` dumps them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from policies.controllers.aws import AwsWatch
from policies.controllers.events import EventRecorder
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
from webhook.aws.carriers import carrier
from webhook.aws.ec2 import Ec2Reader, Ec2Unavailable, ec2_client
from webhook.aws.facts import Ec2Facts, Eni, instance_id_of
from webhook.aws.iam import READ_ACTIONS, iam_policy
from webhook.cli.main import main
from webhook.cluster.files import FileState
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.multus.annotations import NETWORK_STATUS
from webhook.telemetry.metrics import Metrics


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def proxy(moto: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Ec2Proxy]:
    """The SDK's own configuration chain, pointed at the proxy in front of moto, and nothing of ~/.aws."""
    ec2 = Ec2Proxy(moto)
    use_ec2(monkeypatch, ec2, tmp_path)
    yield ec2
    ec2.close()


def _nad(name: str, master: str, start: str, end: str) -> dict[str, Any]:
    ipam = {"type": "whereabouts", "range": "10.0.4.0/24", "range_start": start, "range_end": end}
    return ipvlan_nad(name, "team-a", ipam, master)


def _pod(name: str, node: str, network: str, address: str, mac: str = "") -> dict[str, Any]:
    annotations = {
        "k8s.v1.cni.cncf.io/networks": network,
        NETWORK_STATUS: network_status(f"team-a/{network}", address, mac),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a", "annotations": annotations},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
    }


def _node(node: Node) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name},
        "spec": {"providerID": node.provider_id},
    }


def _world(moto: str, directory: Path) -> dict[str, Node]:
    """A VPC with what goes wrong on EKS, and the cluster's dump beside it.

    node-1: eth1 and eth2 in the same subnet, both tagged (the case that subnet matching
    gets wrong); a stale address on eth1; a Pod whose address eth2 does not have.
    node-2: eth1 untagged. node-3: no eth1. node-4: a t3.nano (2 addresses an interface)
    with two Pods on eth1.
    """
    ec2 = client(moto)
    primary, multus = vpc(ec2, "10.0.0.0/16", "10.0.1.0/24", "10.0.4.0/24")
    ec2.create_subnet_cidr_reservation(SubnetId=multus, Cidr="10.0.4.64/27", ReservationType="explicit")
    nodes = {name: add_node(ec2, name, primary) for name in ("node-1", "node-2", "node-3")}
    nodes["node-4"] = add_node(ec2, "node-4", primary, instance_type="t3.nano")
    attach_eni(ec2, nodes["node-1"], multus, 1, "10.0.4.10", secondary=("10.0.4.71", "10.0.4.99"))
    attach_eni(ec2, nodes["node-1"], multus, 2, "10.0.4.11")
    attach_eni(ec2, nodes["node-2"], multus, 1, "10.0.4.20", tagged=False, secondary=("10.0.4.72",))
    attach_eni(ec2, nodes["node-4"], multus, 1, "10.0.4.40", secondary=("10.0.4.73",))
    documents = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}},
        _nad("dp", "eth1", "10.0.4.70", "10.0.4.80"),
        _nad("signal", "eth2", "10.0.4.100", "10.0.4.120"),
        *(_node(n) for n in nodes.values()),
        _pod("pod-a", "node-1", "dp", "10.0.4.71"),
        _pod("pod-b", "node-1", "signal", "10.0.4.101"),
        _pod("pod-c", "node-2", "dp", "10.0.4.72"),
        _pod("pod-d", "node-3", "dp", "10.0.4.75"),
        _pod("pod-e1", "node-4", "dp", "10.0.4.73"),
        _pod("pod-e2", "node-4", "dp", "10.0.4.74"),
    ]
    (directory / "cluster.yaml").write_text(yaml.safe_dump_all(documents))
    return nodes


def _audit(
    directory: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any], str]:
    status = main(["audit", "--aws", "--state", str(directory), "--format", "json", *extra])
    out, err = capsys.readouterr()
    return status, json.loads(out), err


def test_audit_aws_reports_each_fact_on_the_object_it_concerns(
    moto: str, proxy: Ec2Proxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = _world(moto, tmp_path)
    status, report, err = _audit(tmp_path, capsys)
    assert status == 0 and err == ""
    aws = [f for f in report["findings"] if f["check"] >= "MH060"]
    assert sorted((f["check"], f["kind"], f["name"]) for f in aws) == [
        ("MH060", "Node", "node-2"),
        ("MH061", "Node", "node-3"),
        ("MH063", "Pod", "pod-b"),
        ("MH063", "Pod", "pod-e2"),  # node-4's eth1 holds .73, not .74: a t3.nano takes one secondary
        ("MH064", "Node", "node-1"),
        ("MH065", "NetworkAttachmentDefinition", "signal"),
        ("MH066", "Node", "node-4"),
    ]
    said = {f["check"]: f for f in aws if f["name"] != "pod-e2"}
    untagged = nodes["node-2"].enis[1]["NetworkInterfaceId"]
    assert untagged in said["MH060"]["message"] and said["MH060"]["fix"] == (
        f"aws ec2 create-tags --resources {untagged} --tags Key=node.k8s.amazonaws.com/no_manage,Value=true"
    )
    # eth2 by its device index, not "the ENI in the range's subnet": eth1 is in it too.
    eth2 = nodes["node-1"].enis[2]["NetworkInterfaceId"]
    assert f"10.0.4.101 on net1 (team-a/signal) is not assigned to ENI {eth2}" in said["MH063"]["message"]
    assert "--private-ip-addresses 10.0.4.101 --allow-reassignment" in said["MH063"]["fix"]
    assert "10.0.4.99" in said["MH064"]["message"] and "10.0.4.71" not in said["MH064"]["message"]
    assert "no ENI of" in said["MH061"]["message"] and "device index 1" in said["MH061"]["message"]
    assert (
        said["MH065"]["fix"].startswith("aws ec2 create-subnet-cidr-reservation --subnet-id subnet-")
        and "--cidr 10.0.4.96/27 --reservation-type explicit (the smallest CIDR" in said["MH065"]["fix"]
    )
    assert "past the 2 per interface of t3.nano" in said["MH066"]["message"]


def test_a_mac_in_network_status_names_the_eni_exactly(moto: str, proxy: Ec2Proxy, tmp_path: Path) -> None:
    nodes = _world(moto, tmp_path)
    reader = Ec2Reader(ec2_client())
    facts = reader.facts([n.instance_id for n in nodes.values()])
    node = nodes["node-1"]
    eth1, eth2 = (node.enis[i]["NetworkInterfaceId"] for i in (1, 2))
    by_index = carrier("eth1", node.instance_id, facts)
    assert by_index.eni is not None and by_index.eni.id == eth1 and by_index.how == "device index 1"
    mac = node.enis[2]["MacAddress"]
    by_mac = carrier("eth1", node.instance_id, facts, mac=mac.upper())
    assert by_mac.eni is not None and by_mac.eni.id == eth2 and by_mac.how == "the MAC in network-status"
    # A master not named ethN, matched by the range's subnet: both ENIs are in it, so neither is guessed.
    ambiguous = carrier("ens6", node.instance_id, facts, holds_range=lambda subnet: True)
    assert ambiguous.eni is None and {e.id for e in ambiguous.candidates} == {eth1, eth2}
    assert ambiguous.why_not.startswith(f"2 ENIs of {node.instance_id} could be ens6")


def test_the_reads_are_batched_and_the_policy_names_exactly_what_they_call(
    moto: str, proxy: Ec2Proxy, tmp_path: Path
) -> None:
    ec2 = client(moto)
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.1.{i}.0/24")["Subnet"]["SubnetId"] for i in range(2)
    ]
    nodes = [add_node(ec2, f"n{i}", subnets[0]) for i in range(30)]
    for node in nodes:
        attach_eni(ec2, node, subnets[1], 1, f"10.1.1.{10 + len(node.enis) + nodes.index(node)}")
    observed: list[tuple[str, str]] = []
    facts = Ec2Reader(ec2_client(), observe=lambda action, outcome: observed.append((action, outcome))).facts(
        [n.instance_id for n in nodes]
    )
    assert len(facts.instances) == 30 and len(facts.enis) == 60  # each node's eth0 and eth1
    # One call per kind of fact for 30 nodes, one reservation read per subnet: never one per node.
    assert proxy.calls == {
        "DescribeInstances": 1,
        "DescribeNetworkInterfaces": 1,
        "DescribeSubnets": 1,
        "GetSubnetCidrReservations": 2,
        "DescribeInstanceTypes": 1,
    }
    assert {f"ec2:{action}" for action, _ in observed} == set(READ_ACTIONS)
    assert {outcome for _, outcome in observed} == {"ok"}
    assert iam_policy()["Statement"] == [
        {"Sid": "MultihomeReadEc2", "Effect": "Allow", "Action": list(READ_ACTIONS), "Resource": "*"}
    ]


def test_facts_are_kept_for_their_ttl(moto: str, proxy: Ec2Proxy, tmp_path: Path) -> None:
    nodes = _world(moto, tmp_path)
    now = [0.0]
    reader = Ec2Reader(ec2_client(), ttl=60, clock=lambda: now[0])
    ids = [n.instance_id for n in nodes.values()]
    first = reader.facts(ids)
    calls = sum(proxy.calls.values())
    assert reader.facts(ids) is first and sum(proxy.calls.values()) == calls
    now[0] = 61
    assert reader.facts(ids) is not first and sum(proxy.calls.values()) == 2 * calls


def test_throttling_for_a_while_is_retried_through(moto: str, proxy: Ec2Proxy, tmp_path: Path) -> None:
    nodes = _world(moto, tmp_path)
    proxy.faults.throttle_until = time.monotonic() + 1.5
    facts = Ec2Reader(ec2_client()).facts([n.instance_id for n in nodes.values()])
    assert len(facts.instances) == 4
    assert proxy.answered["DescribeInstances", 503] >= 1 and proxy.answered["DescribeInstances", 200] == 1


def test_ec2_down_leaves_the_rest_of_the_audit_and_says_why_in_one_line(
    moto: str,
    proxy: Ec2Proxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _world(moto, tmp_path)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    proxy.faults.down = True
    status, report, err = _audit(tmp_path, capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: --aws: cannot reach EC2 at " + proxy.url)
    assert err.rstrip().endswith("every other check ran, no MH06x check did")
    checks = {f["check"] for f in report["findings"]}
    assert checks and all(c < "MH060" for c in checks)  # MH005 (tag the ENI) and the rest are there


def test_an_action_iam_refuses_is_named_with_the_way_out(
    moto: str, proxy: Ec2Proxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _world(moto, tmp_path)
    proxy.faults.refused.add("DescribeNetworkInterfaces")
    status, _, err = _audit(tmp_path, capsys)
    assert status == 2
    assert err.startswith(
        "error: --aws: IAM refused ec2:DescribeNetworkInterfaces (UnauthorizedOperation); "
        "`multihome aws iam-policy` prints the policy"
    )


def test_no_credentials_and_no_region_are_said_plainly(
    proxy: Ec2Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(Ec2Unavailable, match="no AWS region: set AWS_REGION"):
        ec2_client()
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata to fall back to here
    with pytest.raises(Ec2Unavailable, match="no AWS credentials: give the controller's ServiceAccount"):
        Ec2Reader(ec2_client()).facts(["i-0123456789abcdef0"])


def test_moto_refuses_unknown_instance_ids_as_ec2_does_so_the_reader_filters(
    moto: str, proxy: Ec2Proxy
) -> None:
    ec2 = client(moto)
    with pytest.raises(ClientError, match=r"InvalidInstanceID\.NotFound"):
        ec2.describe_instances(InstanceIds=["i-0123456789abcdef0"])
    # A Node whose instance is gone (terminated, another account) is no reason to fail the read.
    facts = Ec2Reader(ec2_client()).facts(["i-0123456789abcdef0"])
    assert facts.instances == {} and facts.enis == ()


def test_iam_policy_with_ip_management_writes_only_on_no_manage_enis(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["aws", "iam-policy", "--ip-management"]) == 0
    policy = json.loads(capsys.readouterr().out)
    reads, writes = policy["Statement"]
    assert reads["Action"] == list(READ_ACTIONS) and all(
        a.startswith(("ec2:Describe", "ec2:Get")) for a in reads["Action"]
    )
    assert writes["Resource"] == "arn:aws:ec2:*:*:network-interface/*"
    assert writes["Condition"] == {
        "StringEquals": {"aws:ResourceTag/node.k8s.amazonaws.com/no_manage": "true"}
    }


def test_provider_ids_name_instances_only_on_ec2() -> None:
    assert instance_id_of("aws:///us-east-1a/i-0abc123def4567890") == "i-0abc123def4567890"
    assert instance_id_of("kind://docker/kind/kind-control-plane") is None
    assert instance_id_of("") is None


def test_no_eni_at_the_index_is_none_not_a_guess() -> None:
    eni = Eni("eni-1", "i-1", 2, 0, "02:00:00:00:00:01", "subnet-1", "10.0.4.10")
    facts = Ec2Facts({}, (eni,), {}, {})
    found = carrier("eth1", "i-1", facts)
    assert (
        found.eni is None
        and found.candidates == ()
        and found.why_not == "no ENI of i-1 is eth1 (device index 1)"
    )


def test_the_controller_keeps_its_aws_findings_with_their_age_when_ec2_fails(
    moto: str, proxy: Ec2Proxy, tmp_path: Path
) -> None:
    _world(moto, tmp_path)
    documents = list(yaml.safe_load_all((tmp_path / "cluster.yaml").read_text()))
    server = FakeApiServer()
    for doc in documents:
        if doc["kind"] in ("Node", "Pod"):
            server.put("/api/v1/nodes" if doc["kind"] == "Node" else "/api/v1/pods", doc)
    api = HttpKubeApi(Endpoint.load(server.kubeconfig(tmp_path, server.serve())))
    metrics = Metrics()
    watch = AwsWatch(
        api,
        FileState(("cluster.yaml", d) for d in documents),
        lambda: Ec2Reader(
            ec2_client(), ttl=0, observe=lambda a, o: metrics.ec2_calls.labels(action=a, outcome=o).inc()
        ),
        metrics,
        EventRecorder(api, "multihome-controller-0"),
    )
    try:
        watch.refresh()
        first = {(f.check, f.name) for f in watch.findings}
        assert ("MH060", "node-2") in first and ("MH063", "pod-b") in first
        assert watch.status() == {"findings": len(watch.findings), "ageSeconds": 0}
        events = list(server.collections["/apis/events.k8s.io/v1/events"].objects.values())
        on_node_2 = [
            e for e in events if e["regarding"]["kind"] == "Node" and e["regarding"]["name"] == "node-2"
        ]
        assert [(e["type"], e["reason"]) for e in on_node_2] == [("Warning", "EniNotNoManage")]
        assert on_node_2[0]["note"].startswith("MH060 eni-not-no-manage: ENI eni-")
        assert metrics.ec2_calls.labels(action="DescribeNetworkInterfaces", outcome="ok")._value.get() == 1

        proxy.faults.refused.add("DescribeInstances")
        generation = watch.generation
        watch.refresh()
        assert {(f.check, f.name) for f in watch.findings} == first and watch.generation == generation
        status = watch.status()
        assert status["error"].startswith("IAM refused ec2:DescribeInstances") and status["ageSeconds"] >= 0
        assert metrics.ec2_calls.labels(action="DescribeInstances", outcome="refused")._value.get() == 1
    finally:
        server.close()
