"""IP management (`controller --aws --ip-management`): each Pod's secondary address on its ENI.

With ipvlan on an ENI, a Pod's address routes in the VPC only once EC2 has it assigned
to that ENI, and EKS does not do it. Each pass reads the cluster whole (every Node and
Pod, a full relist) and EC2 fresh, then:

- assigns the addresses Pods hold that their ENI lacks, one call per ENI with all of
  them (`AllowReassignment`, so an address moves from the ENI that had it);
- unassigns addresses on no_manage ENIs, inside the ranges of known NADs, that no Pod
  in a full relist holds, once they have gone unheld for `grace` seconds (a StatefulSet
  Pod that comes back with its address keeps it);
- sets each such Pod's `multihome.io/secondary-ips` condition: True once every address
  is on its ENI, False with why (ENINotManaged, NoENIForMaster, EC2Unavailable, Pending).

It writes only ENIs tagged `node.k8s.amazonaws.com/no_manage=true`, only addresses
inside the NADs' ranges, never an ENI's primary address. Nothing is remembered between
passes but when an address was first seen unheld: a new leader rebuilds everything
from EC2 and the cluster before it writes, and a pass cut short is redone, not doubled.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from policies.aws import OnEc2
from policies.controllers.events import EventRecorder, EventType
from webhook.aws.carriers import carrier
from webhook.aws.ec2 import Ec2Reader, Ec2Unavailable
from webhook.aws.facts import Ec2Facts, Eni, canonical
from webhook.cluster.kube import ApiError, KubeApi
from webhook.decisions.snapshot import ClusterState, PodInfo
from webhook.multus.annotations import NETWORK_STATUS, SECONDARY_IPS_GATE
from webhook.multus.nad import NetworkAttachment, master_interfaces
from webhook.multus.networks import parse_network_status

log = logging.getLogger("multihome.ip_management")

CONDITION: Final = SECONDARY_IPS_GATE


@dataclass(frozen=True)
class Verdict:
    """A Pod's condition: True, or False with a reason and what is wrong."""

    ready: bool
    reason: str
    message: str


@dataclass
class PassReport:
    """What one pass did."""

    assigned: int = 0
    unassigned: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    verdicts: dict[tuple[str, str], Verdict] = field(default_factory=dict)
    failed_enis: set[str] = field(default_factory=set)  # whose write failed: their Pods stay Pending


@dataclass
class _Plan:
    wanted: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # ENI: addresses Pods hold
    enis: dict[str, Eni] = field(default_factory=dict)
    pending: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    verdicts: dict[tuple[str, str], Verdict] = field(default_factory=dict)


class IpManager:
    """One pass at a time, by the leader; `client` is the EC2 client that writes."""

    def __init__(
        self,
        api: KubeApi,
        state: ClusterState,
        reader: Ec2Reader,
        *,
        grace: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        is_leader: Callable[[], bool] = lambda: True,
        events: EventRecorder | None = None,
    ) -> None:
        self.api, self.state, self.reader, self.grace, self.clock = api, state, reader, grace, clock
        self.is_leader, self.events = is_leader, events
        self._unheld_since: dict[tuple[str, str], float] = {}  # (ENI, address): first seen unheld
        # The condition last written to each Pod (by uid: a Pod recreated under its name is
        # another): only a change is written again.
        self._written: dict[str, Verdict] = {}

    def run_once(self) -> PassReport:
        """Read the cluster and EC2, make EC2 match the Pods, and set the Pods' conditions."""
        report = PassReport()
        cluster = OnEc2.from_api(self.api)
        try:
            facts = self.reader.facts(cluster.nodes.values())
        except Ec2Unavailable as err:
            report.errors.append(str(err))
            for pod in cluster.pods:
                if self._managed_networks(pod):
                    report.verdicts[pod.namespace, pod.name] = Verdict(False, "EC2Unavailable", str(err))
            self.set_conditions(cluster.pods, report.verdicts)
            return report
        plan = self._plan(cluster, facts)
        report.verdicts = plan.verdicts
        for eni_id, addresses in sorted(plan.wanted.items()):
            eni = plan.enis[eni_id]
            missing = sorted(a for a in addresses if not eni.holds(a))
            if missing and self.is_leader():
                self._assign(report, eni, missing, facts)
        self._sweep(plan, facts, report)
        for key, waits in plan.pending.items():
            failed = [f"{address} on {eni}" for eni, address in waits if eni in report.failed_enis]
            if failed and report.verdicts[key].ready:
                report.verdicts[key] = Verdict(False, "Pending", f"not assigned yet: {', '.join(failed)}")
        if self.is_leader():
            self.set_conditions(cluster.pods, report.verdicts)
        live = {pod.uid for pod in cluster.pods}
        self._written = {uid: v for uid, v in self._written.items() if uid in live}
        return report

    def _managed_networks(self, pod: PodInfo) -> list[tuple[NetworkAttachment, str, Sequence[str], str]]:
        """(NAD, master, addresses, MAC) of each ipvlan network the Pod's network-status shows."""
        try:
            attached = parse_network_status(pod.annotations.get(NETWORK_STATUS, "[]"))
        except ValueError:
            return []
        found: list[tuple[NetworkAttachment, str, Sequence[str], str]] = []
        for network in attached:
            namespace, _, name = network.name.rpartition("/")
            nad = None if network.default else self.state.nad(namespace or pod.namespace, name)
            for plugin_type, master in master_interfaces(nad) if nad is not None else ():
                if plugin_type == "ipvlan" and nad is not None:
                    found.append((nad, master, network.ips, network.mac))
        return found

    def _plan(self, cluster: OnEc2, facts: Ec2Facts) -> _Plan:
        plan = _Plan()
        for pod in cluster.pods:
            networks = self._managed_networks(pod)
            if not networks:
                continue
            key = (pod.namespace, pod.name)
            instance_id = cluster.nodes[pod.node]
            problems: list[Verdict] = []
            for nad, master, addresses, mac in networks:
                found = carrier(master, instance_id, facts, mac=mac)
                if found.eni is None:
                    problems.append(
                        Verdict(False, "NoENIForMaster", f"{nad.ref} on {master}: {found.why_not}")
                    )
                    continue
                eni = found.eni
                if not eni.no_manage:
                    problems.append(
                        Verdict(
                            False,
                            "ENINotManaged",
                            f"ENI {eni.id} ({master}) is not tagged node.k8s.amazonaws.com/no_manage=true: "
                            "multihome writes no untagged ENI (MH060)",
                        )
                    )
                    continue
                for address in map(canonical, addresses):
                    if _inside(nad, address) and address != eni.primary_ip:
                        plan.wanted[eni.id].add(address)
                        plan.enis[eni.id] = eni
                        plan.pending[key].append((eni.id, address))
                    elif not _inside(nad, address):
                        problems.append(
                            Verdict(False, "Pending", f"{address} is outside {nad.ref}'s range: not assigned")
                        )
            plan.verdicts[key] = (
                problems[0]
                if problems
                else Verdict(True, "Assigned", "every secondary address is on its ENI")
            )
        return plan

    def _sweep(self, plan: _Plan, facts: Ec2Facts, report: PassReport) -> None:
        # Held on this ENI: an address a Pod holds on another ENI is stale here (it moved).
        nads = list(self.state.nads())
        now = self.clock()
        seen: set[tuple[str, str]] = set()
        for eni in facts.enis:
            if not eni.no_manage:
                continue
            stale = []
            held = plan.wanted.get(eni.id, set())
            for address in (*eni.secondary_ips, *eni.ipv6_ips):
                if address in held or not any(_inside(nad, address) for nad in nads):
                    continue
                key = (eni.id, address)
                seen.add(key)
                since = self._unheld_since.setdefault(key, now)
                if now - since >= self.grace:
                    stale.append(address)
            if stale and self.is_leader():
                self._unassign(report, eni, stale)
        self._unheld_since = {k: v for k, v in self._unheld_since.items() if k in seen}

    def _assign(self, report: PassReport, eni: Eni, addresses: list[str], facts: Ec2Facts) -> None:
        """IPv4 in one call that moves them from any other ENI; IPv6, which EC2 cannot move, taken first."""
        v4, v6 = _families(addresses)
        if v4:
            params = {"NetworkInterfaceId": eni.id, "PrivateIpAddresses": v4, "AllowReassignment": True}
            self._call(report, "assign_private_ip_addresses", eni, v4, params, assigned=True)
        if v6:
            for other in facts.enis:
                taken = [a for a in v6 if other.id != eni.id and a in other.ipv6_ips]
                if taken and other.no_manage:
                    self._unassign(report, other, taken)
            params = {"NetworkInterfaceId": eni.id, "Ipv6Addresses": v6}
            self._call(report, "assign_ipv6_addresses", eni, v6, params, assigned=True)

    def _unassign(self, report: PassReport, eni: Eni, addresses: list[str]) -> None:
        v4, v6 = _families(addresses)
        if v4:
            params = {"NetworkInterfaceId": eni.id, "PrivateIpAddresses": v4}
            self._call(report, "unassign_private_ip_addresses", eni, v4, params, assigned=False)
        if v6:
            params = {"NetworkInterfaceId": eni.id, "Ipv6Addresses": v6}
            self._call(report, "unassign_ipv6_addresses", eni, v6, params, assigned=False)

    def _call(
        self,
        report: PassReport,
        action: str,
        eni: Eni,
        addresses: list[str],
        params: dict[str, Any],
        *,
        assigned: bool,
    ) -> None:
        try:
            self.reader.call(action, **params)
        except Ec2Unavailable as err:
            report.errors.append(f"{action} {', '.join(addresses)} on {eni.id}: {err}")
            report.failed_enis.add(eni.id)
            return
        report.calls += 1
        if assigned:
            report.assigned += len(addresses)
        else:
            report.unassigned += len(addresses)
            for address in addresses:
                self._unheld_since.pop((eni.id, address), None)
        log.info(action, extra={"eni": eni.id, "addresses": addresses})

    def set_conditions(self, pods: Sequence[PodInfo], verdicts: Mapping[tuple[str, str], Verdict]) -> None:
        """Write each Pod's `multihome.io/secondary-ips` condition (a strategic merge: by type)."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for pod in pods:
            verdict = verdicts.get((pod.namespace, pod.name))
            if verdict is None or (pod.uid and self._written.get(pod.uid) == verdict):
                continue
            condition: dict[str, Any] = {
                "type": CONDITION,
                "status": "True" if verdict.ready else "False",
                "reason": verdict.reason,
                "message": verdict.message,
                "lastTransitionTime": now,
            }
            try:
                self.api.write(
                    "PATCH",
                    f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status",
                    {"status": {"conditions": [condition]}},
                    content_type="application/strategic-merge-patch+json",
                )
                if pod.uid:
                    self._written[pod.uid] = verdict
                self._tell(pod, verdict)
            except ApiError as err:
                if err.status != 404:  # gone meanwhile
                    log.warning(
                        "cannot set the Pod's condition",
                        extra={"pod": f"{pod.namespace}/{pod.name}", "error": str(err)},
                    )

    def _tell(self, pod: PodInfo, verdict: Verdict) -> None:
        """An Event on the Pod: what was assigned, or why not."""
        if self.events is not None:
            reference = {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name}
            kind: EventType = "Normal" if verdict.ready else "Warning"
            self.events.record(reference, kind, verdict.reason, "AssignSecondaryIPs", verdict.message)


def _families(addresses: list[str]) -> tuple[list[str], list[str]]:
    return [a for a in addresses if ":" not in a], [a for a in addresses if ":" in a]


def _inside(nad: NetworkAttachment, address: str) -> bool:
    try:
        value = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(
        pool.version == value.version and any(first <= int(value) <= last for first, last in pool.spans)
        for pool in nad.pools
    )
