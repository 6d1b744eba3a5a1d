"""IP address safety of secondary networks: the address management EKS leaves to its users.

Amazon EKS manages only the primary interface's addresses (the VPC CNI); whatever hands
out a secondary interface's addresses is the cluster's own business, and its mistakes
show only at run time: two Pods with one address, or an address the VPC never delivers.
These are pure functions over NetworkAttachments (and, for capacity, the Pods of a
state), used by the NAD admission webhook and by the audit:

- overlaps: two NADs whose allocation pools share addresses without sharing the place
  allocations are tracked (see `webhook.multus.ipam.Pool.store`), found with a sweep over the
  pools sorted by their first address, so 5,000 NADs take well under a second;
- VPC-reserved addresses: AWS keeps the first four addresses and the last one of every
  VPC subnet; a pool over the subnet it names that includes them hands them to Pods
  (so does whereabouts with its own gateway in range);
- host-local: allocates per node, so every node hands out the same addresses;
- capacity: the Pods that attach a NAD against the addresses its pools have;
- ipvlan L2 on a VPC subnet: the ENI must own the Pods' addresses as secondary IPs;
- a `multihome.io/cidrs` annotation that disagrees with what the IPAM allocates.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Final

from webhook.decisions.inject import plan_injection, rules_for_pod
from webhook.decisions.snapshot import ClusterState
from webhook.decisions.wording import plural
from webhook.multus.annotations import CIDRS, INJECT, NETWORKS
from webhook.multus.ipam import (
    IPAddress,
    Pool,
    collapse,
    ipam_cidrs,
    merge_spans,
    parse_cidr_list,
    span_text,
    spans_size,
)
from webhook.multus.nad import NetworkAttachment, plugin_configs
from webhook.multus.networks import parse_network_selections

NEARLY_FULL: Final = 0.8
OVERLAP_FIX: Final = (
    "give each network its own addresses (rangeStart/rangeEnd, or exclude), or use whereabouts "
    "with the same network_name on both so one allocator tracks them"
)
HOST_LOCAL_FIX: Final = (
    "use whereabouts (cluster-wide allocation) or static addresses; host-local is safe only for a "
    "network that one node uses (a nodeSelector keeps its Pods there)"
)


@dataclass(frozen=True)
class Overlap:
    """Addresses that two NADs can both hand out."""

    first: NetworkAttachment
    second: NetworkAttachment
    version: int
    spans: tuple[tuple[int, int], ...]

    @property
    def addresses(self) -> str:
        """The shared addresses, as ranges."""
        return ", ".join(span_text(self.version, first, last) for first, last in self.spans)

    @property
    def size(self) -> int:
        return spans_size(self.spans)

    def other(self, nad: NetworkAttachment) -> NetworkAttachment:
        """The NAD of the pair that is not `nad`."""
        return self.second if nad.key == self.first.key else self.first


def _shares_allocations(a: Pool, b: Pool) -> bool:
    return a.store is not None and a.store == b.store


def find_overlaps(nads: Iterable[NetworkAttachment]) -> list[Overlap]:
    """Every pair of NADs whose pools hand out the same address, with the shared spans."""
    listed = list(nads)
    intervals = sorted(
        (
            (pool.version, first, last, index, pool)
            for index, nad in enumerate(listed)
            for pool in nad.pools
            for first, last in pool.spans
        ),
        key=lambda item: (item[0], item[1]),
    )
    shared: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    active: list[tuple[int, int, tuple[int, int, int, int, Pool]]] = []
    version = 0
    for sequence, interval in enumerate(intervals):
        this_version, first, last, index, pool = interval
        if this_version != version:
            active, version = [], this_version
        while active and active[0][0] < first:
            heapq.heappop(active)
        for other_last, _, (_, _, _, other_index, other_pool) in active:
            if other_index != index and not _shares_allocations(pool, other_pool):
                key = (min(index, other_index), max(index, other_index), version)
                shared.setdefault(key, []).append((first, min(last, other_last)))
        heapq.heappush(active, (last, sequence, interval))
    return [
        Overlap(listed[a], listed[b], v, tuple(merge_spans(spans)))
        for (a, b, v), spans in sorted(shared.items())
    ]


class PoolBounds:
    """Which NADs a new one may overlap: every NAD's pool bounds, sorted by lowest address.

    Built once for a set of NADs and asked once per admission: a new NAD's candidates
    are found by bisection, not by a pass over all of them (5,000 NADs: 0.6 ms a pass).
    A `PoolBoundsCache` keeps the last one built between admissions.
    """

    def __init__(self, nads: Iterable[NetworkAttachment]) -> None:
        self.nads = tuple(nads)
        entries: dict[int, list[tuple[int, int, int]]] = {}
        for index, nad in enumerate(self.nads):
            for version, (low, high) in nad.pool_bounds.items():
                entries.setdefault(version, []).append((low, high, index))
        self._entries = {version: sorted(found) for version, found in entries.items()}
        self._lows = {version: [low for low, _, _ in found] for version, found in self._entries.items()}
        # The highest address any of the first i+1 entries reaches: a walk down from the
        # last entry starting at or below a new NAD's highest address stops where it drops
        # below the new NAD's lowest.
        self._reach = {
            version: list(accumulate((high for _, high, _ in found), max))
            for version, found in self._entries.items()
        }

    def near(self, nad: NetworkAttachment) -> list[NetworkAttachment]:
        """The NADs (not `nad` itself) whose pools' bounds meet `nad`'s, in the order given."""
        found: set[int] = set()
        for version, (low, high) in nad.pool_bounds.items():
            if version not in self._entries:
                continue
            entries, reach = self._entries[version], self._reach[version]
            at = bisect_right(self._lows[version], high) - 1
            while at >= 0 and reach[at] >= low:
                if entries[at][1] >= low:
                    found.add(entries[at][2])
                at -= 1
        return [self.nads[i] for i in sorted(found) if self.nads[i].key != nad.key]


class PoolBoundsCache:
    """The last `PoolBounds` built, rebuilt when the NADs differ; one per handler, not per process."""

    def __init__(self) -> None:
        self._last: PoolBounds | None = None

    def of(self, nads: Iterable[NetworkAttachment]) -> PoolBounds:
        """The index of `nads`: the last one built while they are the same NADs, else a new one.

        The state replaces a NAD's object when the NAD changes, so comparing the
        snapshot is comparing identities, a fraction of what a pass over the pools was.
        A race between two threads builds the index twice; both are right.
        """
        snapshot = tuple(nads)
        last = self._last
        if last is None or last.nads != snapshot:
            last = self._last = PoolBounds(snapshot)
        return last


def overlaps_with(nad: NetworkAttachment, others: Iterable[NetworkAttachment] | PoolBounds) -> list[Overlap]:
    """The overlaps of one NAD (being admitted) with the others; the NAD itself is skipped.

    Only the NADs whose pools' bounds meet the new one's take part in the sweep, found
    in a `PoolBounds` (pass one to keep it between admissions).
    """
    index = others if isinstance(others, PoolBounds) else PoolBounds(others)
    near = index.near(nad)
    return [o for o in find_overlaps([nad, *near]) if nad.key in (o.first.key, o.second.key)]


@dataclass(frozen=True)
class ReservedInPool:
    """Addresses a pool hands out that the VPC keeps, or that are its own gateway."""

    pool: Pool
    reserved: tuple[IPAddress, ...]
    gateway: IPAddress | None

    def message(self) -> str:
        """What goes wrong and where, in words."""
        parts = []
        if self.reserved and self.pool.subnet is not None:
            listed = ", ".join(str(a) for a in self.reserved)
            parts.append(
                f"{self.pool.where} hands out {listed}, which AWS reserves in every VPC subnet "
                f"(the first four addresses and the last one of {self.pool.subnet}, if that is the "
                "subnet the network's ENIs are in)"
            )
        if self.gateway is not None:
            parts.append(f"{self.pool.where} hands out its own gateway {self.gateway}")
        return "; ".join(parts)

    def fix(self) -> str:
        """How to keep the addresses out."""
        subnet = self.pool.subnet
        fixes = []
        if self.reserved and subnet is not None:
            start = subnet[4] if subnet.num_addresses > 5 else subnet[-1]
            field = "range_start" if self.pool.ipam == "whereabouts" else "rangeStart"
            fixes.append(f"set {field} to {start} or later")
            if subnet.broadcast_address in self.reserved:
                fixes.append(f"end the range before {subnet.broadcast_address}")
        if self.gateway is not None:
            fixes.append('set "exclude_gateway": true')
        return ", ".join(fixes)


def reserved_in_pools(nad: NetworkAttachment) -> list[ReservedInPool]:
    """For each pool over a named subnet: the VPC-reserved addresses and gateway it hands out."""
    found = []
    for pool in nad.pools:
        if pool.subnet is None:
            continue
        subnet = pool.subnet
        kept = [subnet.network_address + i for i in range(min(4, subnet.num_addresses))]
        kept.append(subnet.broadcast_address)
        reserved = tuple(sorted({a for a in kept if a in pool}))
        gateway = pool.gateway if pool.ipam == "whereabouts" and pool.gateway in pool else None
        if reserved or gateway is not None:
            found.append(ReservedInPool(pool, reserved, gateway))
    return found


def host_local_pools(nad: NetworkAttachment) -> list[Pool]:
    """The pools allocated per node (host-local), which every node hands out again."""
    return [pool for pool in nad.pools if pool.ipam == "host-local"]


def eni_secondary_ips(nad: NetworkAttachment) -> str | None:
    """The subnets of an ipvlan L2 network on a VPC subnet, whose ENI must own the Pods' addresses."""
    if nad.config is None:
        return None
    ipvlan_l2 = any(
        p.get("type") == "ipvlan" and str(p.get("mode") or "l2").lower() == "l2"
        for p in plugin_configs(nad.config)
    )
    subnets = sorted({str(p.subnet) for p in nad.pools if p.subnet is not None})
    return ", ".join(subnets) if ipvlan_l2 and subnets else None


def annotation_mismatch(nad: NetworkAttachment) -> str | None:
    """Why the `multihome.io/cidrs` annotation disagrees with the IPAM config, if it does."""
    annotated = nad.annotations.get(CIDRS, "").strip()
    if not annotated or nad.config is None or not nad.pools:
        return None
    try:
        declared, derived = parse_cidr_list(annotated), ipam_cidrs(nad.config)
    except ValueError:
        return None  # reported as an invalid annotation or config
    if collapse(declared) == collapse(derived):
        return None
    return (
        f'metadata.annotations {CIDRS} says "{annotated}" but the IPAM config allocates '
        f"{', '.join(str(c) for c in derived)}"
    )


def capacity(nad: NetworkAttachment) -> int:
    """How many addresses the NAD's pools hand out (0 when unknown)."""
    return sum(pool.size for pool in nad.pools)


def attachments(state: ClusterState) -> Counter[tuple[str, str]]:
    """Pods that attach each NAD, by (namespace, name): running Pods as they are, workload
    templates with what their rules will inject, times their replicas."""
    counts: Counter[tuple[str, str]] = Counter()
    for pod in state.pods():
        if pod.host_network:
            continue
        try:
            selections = (
                parse_network_selections(pod.annotations[NETWORKS], pod.namespace)
                if NETWORKS in pod.annotations
                else []
            )
        except ValueError:
            continue
        if pod.owner and pod.annotations.get(INJECT) != "false":
            rules = rules_for_pod(state, pod.namespace, pod.labels)
            selections = list(plan_injection(selections, rules, pod.namespace, state).selections)
        for key in {s.key for s in selections}:
            counts[key] += pod.replicas
    return counts


@dataclass(frozen=True)
class Usage:
    """Pods attaching a NAD against the addresses it has."""

    nad: NetworkAttachment
    pods: int
    addresses: int

    @property
    def ratio(self) -> float:
        return self.pods / self.addresses if self.addresses else 0.0

    def __str__(self) -> str:
        return f"{plural(self.pods, 'Pod')} attach it and its ranges hold {plural(self.addresses, 'address')} ({self.ratio:.0%})"


def crowded(state: ClusterState, threshold: float = NEARLY_FULL) -> Iterator[Usage]:
    """NADs whose attaching Pods exceed `threshold` of their addresses."""
    counts = attachments(state)
    for nad in state.nads():
        usage = Usage(nad, counts.get(nad.key, 0), capacity(nad))
        if usage.addresses and usage.ratio > threshold:
            yield usage
