"""The AWS side of Multus on EKS, checked: MH060-MH066.

A pure function of the cluster (NADs; Nodes and their instances; Pods with the node
they run on and Multus' network-status) and one read of EC2 (`Ec2Facts`). Each
finding names the facts that make it true: the ENI, the node, the address, the NAD,
the subnet; its fix is the AWS command for that ENI or subnet.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from policies.audit import Finding
from webhook.aws.carriers import Carrier, carrier
from webhook.aws.facts import Ec2Facts, Eni, Subnet, canonical, instance_id_of
from webhook.cluster.files import FileState
from webhook.cluster.kube import KubeApi
from webhook.decisions.checks import CHECKS, NO_MANAGE_KEY, NO_MANAGE_TAG
from webhook.decisions.snapshot import ClusterState, PodInfo, pod_info
from webhook.multus.annotations import NETWORK_STATUS
from webhook.multus.ipam import Pool
from webhook.multus.json_types import object_field
from webhook.multus.nad import NetworkAttachment, master_interfaces
from webhook.multus.networks import AttachedNetwork, parse_network_status

NAD_KIND = "NetworkAttachmentDefinition"


@dataclass
class _Seen:
    """What the walk over the Pods found, for the checks on ENIs and subnets after it."""

    findings: dict[tuple[str, str, str, str, str], Finding] = field(default_factory=dict)
    carried: dict[tuple[str, str], tuple[NetworkAttachment, Eni, str]] = field(default_factory=dict)
    pod_addresses: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    nodes_of: dict[str, str] = field(default_factory=dict)  # ENI ID: node name

    def add(self, check: str, kind: str, namespace: str, name: str, message: str, fix: str) -> None:
        key = (check, kind, namespace, name, message)
        self.findings.setdefault(
            key, Finding(check, CHECKS[check].severity, kind, namespace, name, message, fix)
        )


NODES_PATH = "/api/v1/nodes"
PODS_PATH = "/api/v1/pods"


@dataclass(frozen=True)
class OnEc2:
    """The part of a cluster the AWS checks read: Nodes' instances and the Pods Multus attached."""

    nodes: Mapping[str, str]  # Node name: EC2 instance ID
    pods: Sequence[PodInfo]  # Pods with a node and a network-status

    @classmethod
    def from_files(cls, state: FileState) -> OnEc2:
        """From a dump (`kubectl get nodes,pods -A -o yaml`) read as file state."""
        nodes = {name: i for name, provider in state.nodes().items() if (i := instance_id_of(provider))}
        return cls(nodes, [p for p in state.pods() if _attached(p)])

    @classmethod
    def from_api(cls, api: KubeApi) -> OnEc2:
        """From the API server: every Node, and every Pod, a page at a time."""
        nodes = {
            str(object_field(n, "metadata").get("name")): i
            for n in api.list(NODES_PATH)[0]
            if (i := instance_id_of(str(object_field(n, "spec").get("providerID") or "")))
        }
        pods = [info for page, _ in api.pages(PODS_PATH) for obj in page if _attached(info := pod_info(obj))]
        return cls(nodes, pods)


def _attached(pod: PodInfo) -> bool:
    return bool(pod.node and pod.annotations.get(NETWORK_STATUS) and not pod.owner)


def aws_findings(
    state: ClusterState, nodes: Mapping[str, str], pods: Iterable[PodInfo], facts: Ec2Facts
) -> list[Finding]:
    """Every MH06x finding: `nodes` maps Node name to instance ID."""
    seen = _Seen()
    for pod in pods:
        instance_id = nodes.get(pod.node)
        if instance_id is not None and pod.annotations.get(NETWORK_STATUS):
            _pod(pod, instance_id, state, facts, seen)
    for nad, eni, node in seen.carried.values():
        subnet = facts.subnets.get(eni.subnet_id)
        if subnet is not None:
            _range(nad, eni, node, subnet, seen)
    _enis(facts, seen)
    return sorted(seen.findings.values(), key=lambda f: (f.check, f.kind, f.namespace, f.name, f.message))


def _pod(pod: PodInfo, instance_id: str, state: ClusterState, facts: Ec2Facts, seen: _Seen) -> None:
    try:
        attached = parse_network_status(pod.annotations[NETWORK_STATUS])
    except ValueError:
        return  # Multus' own annotation, unreadable: nothing to check it against
    for network in attached:
        namespace, _, name = network.name.rpartition("/")
        nad = state.nad(namespace or pod.namespace, name) if not network.default else None
        if nad is None:
            continue
        for plugin_type, master in master_interfaces(nad):
            found = carrier(
                master,
                instance_id,
                facts,
                mac=network.mac if plugin_type in ("ipvlan", "macvlan") else "",
                holds_range=partial(_holds, nad.pools),
            )
            _carried(pod, nad, plugin_type, master, network, found, seen)


def _carried(
    pod: PodInfo,
    nad: NetworkAttachment,
    plugin_type: str,
    master: str,
    network: AttachedNetwork,
    found: Carrier,
    seen: _Seen,
) -> None:
    node = pod.node
    if found.eni is None:
        seen.add(
            "MH061",
            "Node",
            "",
            node,
            f"Pod {pod.namespace}/{pod.name} attaches {nad.ref} on {master}, and {found.why_not}",
            f"attach one ENI at the device index {master} names, tagged {NO_MANAGE_TAG}",
        )
        return
    eni = found.eni
    seen.carried[(nad.ref, eni.id)] = (nad, eni, node)
    seen.nodes_of[eni.id] = node
    if not eni.no_manage:
        seen.add(
            "MH060",
            "Node",
            "",
            node,
            f"ENI {eni.id} ({master}, device index {eni.device_index} of {eni.instance_id}) carries {nad.ref} "
            f"and is not tagged {NO_MANAGE_TAG}",
            f"aws ec2 create-tags --resources {eni.id} --tags Key={NO_MANAGE_KEY},Value=true",
        )
    if plugin_type != "ipvlan":
        return  # host-device hands the ENI itself to the Pod; macvlan does not route in a VPC at all
    for address in map(canonical, network.ips):
        seen.pod_addresses[eni.id].add(address)
        if not eni.holds(address):
            seen.add(
                "MH063",
                "Pod",
                pod.namespace,
                pod.name,
                f"{address} on {network.interface} ({nad.ref}) is not assigned to ENI {eni.id} "
                f"({master} of node {node}), so the VPC does not deliver it",
                f"aws ec2 assign-private-ip-addresses --network-interface-id {eni.id} "
                f"--private-ip-addresses {address} --allow-reassignment",
            )


def _range(nad: NetworkAttachment, eni: Eni, node: str, subnet: Subnet, seen: _Seen) -> None:
    where = f"ENI {eni.id} on node {node} is in subnet {subnet.id} ({subnet.cidr})"
    outside = _outside(nad.pools, subnet)
    if outside:
        seen.add(
            "MH062",
            NAD_KIND,
            nad.namespace,
            nad.name,
            f"hands out {_spans_text(outside)}, outside the subnet of the ENI that carries it: {where}",
            f"move the range into {subnet.cidr}, or carry the network on an ENI of the subnet it is in",
        )
        return
    uncovered = [
        span
        for pool in nad.pools
        if pool.version == 4
        for span in pool.spans
        if not any(_covers(r, span) for r in subnet.explicit_reservations)
    ]
    if uncovered:
        cidrs = [str(_covering(span)) for span in uncovered]
        seen.add(
            "MH065",
            NAD_KIND,
            nad.namespace,
            nad.name,
            f"hands out {_spans_text(uncovered)} in subnet {subnet.id} ({subnet.cidr}) with no explicit "
            "CIDR reservation over it, so EC2 may give these addresses to other ENIs",
            "; ".join(
                f"aws ec2 create-subnet-cidr-reservation --subnet-id {subnet.id} --cidr {cidr} "
                "--reservation-type explicit"
                for cidr in dict.fromkeys(cidrs)
            )
            + " (the smallest CIDR over each range: EC2 then keeps all of it out of automatic assignment)",
        )


def _enis(facts: Ec2Facts, seen: _Seen) -> None:
    held = {address for addresses in seen.pod_addresses.values() for address in addresses}
    carriers = {eni.id: eni for _, eni, _ in seen.carried.values()}
    for eni in carriers.values():
        node = seen.nodes_of[eni.id]
        stale = sorted(a for a in eni.secondary_ips if a not in held)
        if eni.no_manage and stale:
            seen.add(
                "MH064",
                "Node",
                "",
                node,
                f"ENI {eni.id} on node {node} has {', '.join(stale[:10])}{' ...' if len(stale) > 10 else ''} "
                "assigned, which no Pod holds",
                f"aws ec2 unassign-private-ip-addresses --network-interface-id {eni.id} "
                f"--private-ip-addresses {' '.join(stale[:10])}",
            )
        instance = facts.instances.get(eni.instance_id)
        limit = facts.addresses_per_interface.get(instance.type, 0) if instance else 0
        wanted = {a for a in seen.pod_addresses.get(eni.id, ()) if ":" not in a} | set(eni.secondary_ips)
        if limit and 1 + len(wanted) > limit:
            seen.add(
                "MH066",
                "Node",
                "",
                node,
                f"ENI {eni.id} on node {node} would hold {1 + len(wanted)} IPv4 addresses (its primary and "
                f"{len(wanted)} for Pods), past the {limit} per interface of {instance.type if instance else '?'}",
                "spread the Pods over more nodes or ENIs, or use an instance type with more addresses per interface",
            )


def _holds(pools: Sequence[Pool], subnet: Subnet) -> bool:
    return not _outside(pools, subnet)


def _outside(pools: Sequence[Pool], subnet: Subnet) -> list[tuple[int, int]]:
    low, high = int(subnet.cidr.network_address), int(subnet.cidr.broadcast_address)
    return [s for p in pools if p.version == 4 for s in p.spans if s[0] < low or s[1] > high]


def _in_pool(address: int, pool: Pool) -> bool:
    return any(first <= address <= last for first, last in pool.spans)


def _covers(reservation: ipaddress.IPv4Network | ipaddress.IPv6Network, span: tuple[int, int]) -> bool:
    return (
        reservation.version == 4
        and int(reservation.network_address) <= span[0]
        and span[1] <= int(reservation.broadcast_address)
    )


def _spans_text(spans: Sequence[tuple[int, int]]) -> str:
    return ", ".join(
        f"{ipaddress.IPv4Address(first)}"
        if first == last
        else f"{ipaddress.IPv4Address(first)}-{ipaddress.IPv4Address(last)}"
        for first, last in spans
    )


def _covering(span: tuple[int, int]) -> ipaddress.IPv4Network:
    """The smallest CIDR that holds the whole span."""
    network = ipaddress.IPv4Network((span[0], 32))
    while int(network.broadcast_address) < span[1]:
        network = network.supernet()
    return network
