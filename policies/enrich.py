"""Enrich NetworkPolicies with the CIDRs and ports of the secondary networks.

NetworkPolicies only know Pods' primary addresses. For each policy:

- Peers: every ingress `from` / egress `to` entry that selects Pods (podSelector
  and/or namespaceSelector) gets the CIDRs of the secondary networks of the Pods
  it selects, as `ipBlock` peers in the same rule, so with the same ports.
- Ports: every secondary network of the Pods the policy selects that declares
  `multihome.io/ports` gets one rule per direction the policy governs, from / to
  that network's CIDRs on those ports.

What was added is recorded in the `multihome.io/enrichment` annotation; enriching
again first removes exactly that, so enrichment is idempotent and `remove_enrichment`
gives back the policy as it was. A Pod's secondary networks are those of its own
annotation plus what its AttachmentRules inject, so workload templates in a GitOps
repository are enriched for before their Pods exist.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Literal

from webhook.admission import wire
from webhook.admission.review import AdmissionRequest, Decision, allowed, patched
from webhook.decisions.inject import plan_injection, rules_for_pod
from webhook.decisions.policy import AdmissionPolicy
from webhook.decisions.snapshot import ClusterState, PodInfo
from webhook.multus.annotations import ENRICH, ENRICHMENT, INJECT, MULTI_POLICY_FOR, NETWORKS
from webhook.multus.ipam import IPNetwork, PortRange, collapse
from webhook.multus.json_types import json_copy, object_field, object_to_edit, string_map
from webhook.multus.nad import NetworkAttachment
from webhook.multus.networks import NetworkSelection, parse_network_selections
from webhook.multus.selectors import compile_selector

Direction = Literal["ingress", "egress"]
PEER_KEY: Final[Mapping[Direction, str]] = {"ingress": "from", "egress": "to"}
# 2: counts and digests of what was added (1 listed it, and grew with the cluster).
RECORD_VERSION: Final = 2
DIGEST_CHARS: Final = 12


@dataclass
class Enrichment:
    """An enriched policy, what was added, and what could not be."""

    policy: dict[str, Any]
    networks: list[NetworkAttachment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def record(self) -> dict[str, Any] | None:
        """The `multihome.io/enrichment` record, if anything was added."""
        value = string_map(object_field(self.policy, "metadata").get("annotations")).get(ENRICHMENT)
        return json.loads(value) if value else None


def pod_networks(pod: PodInfo, state: ClusterState) -> list[NetworkSelection]:
    """The secondary networks a Pod has, or will have once injection has run."""
    if pod.host_network:
        return []
    value = pod.annotations.get(NETWORKS)
    try:
        existing = parse_network_selections(value, pod.namespace) if value is not None else []
    except ValueError:
        return []  # Multus will not start this Pod; the audit reports it
    if pod.annotations.get(INJECT) == "false":
        return existing
    rules = rules_for_pod(state, pod.namespace, pod.labels)
    if not rules:
        return existing
    return list(plan_injection(existing, rules, pod.namespace, state).selections)


@dataclass(frozen=True, eq=False)
class Selection:
    """The secondary networks of the Pods a selector picks: NADs, their collapsed CIDRs, and the unknown."""

    nads: tuple[NetworkAttachment, ...]
    cidrs: tuple[IPNetwork, ...]
    unknown: tuple[tuple[str, str], ...]

    @cached_property
    def texts(self) -> tuple[str, ...]:
        """The CIDRs as written in ipBlocks (formatting them was most of an enrichment's cost)."""
        return tuple(str(c) for c in self.cidrs)


@dataclass(frozen=True)
class _Group:
    """Pods of one namespace with the same labels and the same networks."""

    labels: Mapping[str, str]
    nads: tuple[NetworkAttachment, ...]
    unknown: tuple[tuple[str, str], ...]


class PodNetworks:
    """Every Pod's secondary networks, grouped so selectors are evaluated once per label set.

    Pods of one workload share labels and networks, so 50,000 Pods are a few thousand
    groups; a peer's selection is memoized, since policies repeat their selectors.
    Built from one state at one moment: rebuild it when the state changes.
    """

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.namespaces = [(ns.name, dict(ns.labels)) for ns in state.namespaces()]
        self._groups: dict[str, list[_Group]] = {}
        resolved: dict[
            tuple[object, ...], tuple[tuple[NetworkAttachment, ...], tuple[tuple[str, str], ...]]
        ] = {}
        by_key: dict[str, dict[tuple[object, ...], _Group]] = {}
        for pod in state.pods():
            labels = tuple(sorted(pod.labels.items()))
            cache_key = (pod.namespace, labels, tuple(sorted(pod.annotations.items())), pod.host_network)
            if cache_key not in resolved:
                resolved[cache_key] = self._resolve(pod)
            nads, unknown = resolved[cache_key]
            if not nads and not unknown:
                continue
            group_key = (labels, tuple(n.key for n in nads), unknown)
            groups = by_key.setdefault(pod.namespace, {})
            if group_key not in groups:
                groups[group_key] = _Group(pod.labels, nads, unknown)
        self._groups = {ns: list(groups.values()) for ns, groups in by_key.items()}
        self._selections: dict[tuple[str, str, str], Selection] = {}
        self._unions: dict[tuple[int, ...], tuple[str, ...]] = {}
        self._namespace_selections: dict[str, tuple[str, ...]] = {}

    def _resolve(self, pod: PodInfo) -> tuple[tuple[NetworkAttachment, ...], tuple[tuple[str, str], ...]]:
        nads: list[NetworkAttachment] = []
        unknown: list[tuple[str, str]] = []
        for selection in pod_networks(pod, self.state):
            nad = self.state.nad(*selection.key)
            if nad is None:
                unknown.append((selection.ref, "does not exist"))
            elif not nad.addressing.known:
                unknown.append((nad.ref, str(nad.addressing.unknown_reason)))
            else:
                nads.append(nad)
        return tuple(nads), tuple(unknown)

    def select(self, policy_namespace: str, pod_selector: object, namespace_selector: object) -> Selection:
        """What a peer (or a policy's own podSelector) selects; memoized, so callers must not change it."""
        namespace_key = wire.encode_key(namespace_selector) if namespace_selector is not None else ""
        key = (
            wire.encode_key(pod_selector),
            namespace_key,
            "" if namespace_key else policy_namespace,
        )
        if key not in self._selections:
            if namespace_selector is None:
                namespaces: Sequence[str] = (policy_namespace,)
            else:
                if namespace_key not in self._namespace_selections:
                    selector = compile_selector(namespace_selector, "namespaceSelector")
                    self._namespace_selections[namespace_key] = tuple(
                        name for name, labels in self.namespaces if selector.matches(labels)
                    )
                namespaces = self._namespace_selections[namespace_key]
            self._selections[key] = self._select(namespaces, pod_selector)
        return self._selections[key]

    def union(self, selections: Sequence[Selection]) -> tuple[str, ...]:
        """The collapsed CIDRs of several selections (a rule's peers), as text; memoized like them."""
        if len(selections) == 1:
            return selections[0].texts
        key = tuple(id(s) for s in selections)  # selections live as long as this index
        if key not in self._unions:
            self._unions[key] = tuple(str(c) for c in collapse(c for s in selections for c in s.cidrs))
        return self._unions[key]

    def _select(self, namespaces: Sequence[str], pod_selector: object) -> Selection:
        pods = compile_selector(pod_selector, "podSelector")
        found: dict[tuple[str, str], NetworkAttachment] = {}
        unknown: dict[str, str] = {}
        for namespace in namespaces:
            for group in self._groups.get(namespace, ()):
                if pods.matches(group.labels):
                    found.update((n.key, n) for n in group.nads)
                    unknown.update(group.unknown)
        nads = tuple(found[k] for k in sorted(found))
        cidrs = tuple(collapse(c for nad in nads for c in nad.addressing.cidrs))
        return Selection(nads, cidrs, tuple(sorted(unknown.items())))


def governed_directions(spec: Mapping[str, Any]) -> list[Direction]:
    """Directions a policy governs: its policyTypes, else Ingress, plus Egress if it has egress rules."""
    types = spec.get("policyTypes")
    if isinstance(types, list) and types:
        return [d for d in ("ingress", "egress") if d.capitalize() in types]
    return ["ingress", "egress"] if spec.get("egress") else ["ingress"]


def enrich_policy(
    policy: Mapping[str, Any], state: ClusterState, networks: PodNetworks | None = None
) -> Enrichment:
    """The policy with its secondary networks' CIDRs and ports added (a new object).

    `networks` is the Pod network index of `state`; passing one in saves building it
    for each policy of a pass.
    """
    metadata = object_field(policy, "metadata")
    annotations = string_map(metadata.get("annotations"))
    if annotations.get(ENRICH) == "false":
        return Enrichment(json_copy(dict(policy)))
    base, warnings = remove_enrichment(policy)
    spec = base.get("spec")
    if not isinstance(spec, dict):
        return Enrichment(base, warnings=warnings)
    namespace = str(object_field(base, "metadata").get("namespace") or "default")
    networks = networks or PodNetworks(state)
    unknown: dict[str, str] = {}
    record: dict[str, Any] = {"v": RECORD_VERSION, "peers": {}, "rules": {}, "created": []}
    for direction in governed_directions(spec):
        _enrich_peers(spec, direction, namespace, networks, record, unknown)
    try:
        own = networks.select(namespace, spec.get("podSelector"), None)
        selected: Sequence[NetworkAttachment] = own.nads
        unknown.update(own.unknown)
    except ValueError as err:
        selected, unknown["spec.podSelector"] = (), f"invalid selector: {err}"
    for direction in governed_directions(spec):
        _add_port_rules(spec, direction, selected, record)
    warnings += [
        f"NetworkPolicy {namespace}/{metadata.get('name', '')}: not enriched for network {ref}: {reason}"
        for ref, reason in sorted(unknown.items())
    ]
    if not record["peers"] and not record["rules"]:
        return Enrichment(base, warnings=warnings)
    base_metadata = object_to_edit(base, "metadata")
    if not base_metadata.get("annotations"):
        record["annotations_created"] = True
    object_to_edit(base_metadata, "annotations")[ENRICHMENT] = wire.encode_text(_summarized(record))
    return Enrichment(base, list(selected), warnings)


def _summarized(record: dict[str, Any]) -> dict[str, Any]:
    """The record as written: each addition as [count, digest], so it stays short at any size."""
    summary = {
        "v": RECORD_VERSION,
        "peers": {
            direction: {
                index: counted_digest([{"ipBlock": {"cidr": c}} for c in cidrs])
                for index, cidrs in by_index.items()
            }
            for direction, by_index in record["peers"].items()
        },
        "rules": {direction: counted_digest(rules) for direction, rules in record["rules"].items()},
        "created": record["created"],
        "annotations_created": record.get("annotations_created", False),
    }
    return {k: v for k, v in summary.items() if v or k == "v"}


def counted_digest(items: Sequence[object]) -> list[int | str]:
    """[how many, a digest of them]: enough to find exactly these items again, and to notice edits."""
    return [len(items), digest(items)]


def digest(items: Sequence[object]) -> str:
    return hashlib.sha256(wire.encode_text(list(items)).encode()).hexdigest()[:DIGEST_CHARS]


def _window(items: list[Any], summary: object) -> slice | None:
    """Where the `[count, digest]` items sit in `items`: the end first (where they were put)."""
    if not (isinstance(summary, list) and len(summary) == 2 and isinstance(summary[0], int)):
        return None
    count, wanted = summary
    if count <= 0 or count > len(items):
        return None
    for start in range(len(items) - count, -1, -1):
        if digest(items[start : start + count]) == wanted:
            return slice(start, start + count)
    return None


def _enrich_peers(
    spec: dict[str, Any],
    direction: Direction,
    namespace: str,
    networks: PodNetworks,
    record: dict[str, Any],
    unknown: dict[str, str],
) -> None:
    rules = spec.get(direction)
    if not isinstance(rules, list):
        return
    peer_key = PEER_KEY[direction]
    for index, rule in enumerate(rules):
        peers = rule.get(peer_key) if isinstance(rule, dict) else None
        if not isinstance(peers, list) or not peers:
            continue  # no peers: the rule already admits every source / destination
        contributions: list[Selection] = []
        for peer_index, peer in enumerate(peers):
            if not isinstance(peer, dict) or "ipBlock" in peer:
                continue
            if "podSelector" not in peer and "namespaceSelector" not in peer:
                continue
            try:
                selection = networks.select(namespace, peer.get("podSelector"), peer.get("namespaceSelector"))
            except ValueError as err:
                unknown[f"{direction}[{index}].{peer_key}[{peer_index}]"] = f"invalid selector: {err}"
                continue
            unknown.update(selection.unknown)
            contributions.append(selection)
        cidrs = networks.union(contributions) if contributions else ()
        present = {_plain_block(p) for p in peers}
        present.discard(None)
        added = [cidr for cidr in cidrs if cidr not in present] if present else list(cidrs)
        if added:
            peers += [{"ipBlock": {"cidr": cidr}} for cidr in added]
            record["peers"].setdefault(direction, {})[str(index)] = added


def _plain_block(peer: object) -> str | None:
    """The CIDR of an `ipBlock` peer without `except`, else None."""
    if isinstance(peer, dict) and set(peer) == {"ipBlock"}:
        block = peer["ipBlock"]
        if isinstance(block, dict) and set(block) == {"cidr"}:
            return str(block["cidr"])
    return None


def _add_port_rules(
    spec: dict[str, Any], direction: Direction, selected: Sequence[NetworkAttachment], record: dict[str, Any]
) -> None:
    for nad in selected:
        if not nad.ports:
            continue
        rule = {
            PEER_KEY[direction]: [{"ipBlock": {"cidr": str(c)}} for c in nad.addressing.cidrs],
            "ports": [port_entry(p) for p in nad.ports],
        }
        if spec.get(direction) is None:
            spec[direction] = []
            record["created"].append(direction)
        elif not isinstance(spec[direction], list):
            return  # not a list of rules: nothing a NetworkPolicy could mean, left as it is
        spec[direction].append(rule)
        record["rules"].setdefault(direction, []).append(rule)


def port_entry(port: PortRange) -> dict[str, Any]:
    """A NetworkPolicyPort for a port or a range (`endPort`)."""
    entry: dict[str, Any] = {"protocol": port.protocol, "port": port.port}
    if port.end_port is not None:
        entry["endPort"] = port.end_port
    return entry


def remove_enrichment(policy: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The policy without what `multihome.io/enrichment` says was added; warnings if it cannot say."""
    result = json_copy(dict(policy))
    metadata = result.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict) or ENRICHMENT not in annotations:
        return result, []
    raw = annotations.pop(ENRICHMENT)
    try:
        record = json.loads(raw)
        if not isinstance(record, dict):
            raise TypeError("not an object")
    except (TypeError, ValueError):
        return result, [f"{ENRICHMENT} is not a record multihome wrote; it was dropped and nothing removed"]
    spec: dict[str, Any] = result["spec"] if isinstance(result.get("spec"), dict) else {}
    warnings: list[str] = []
    if record.get("v") == 1:
        _remove_listed(spec, record)
    else:
        warnings = _remove_counted(spec, record)
    for direction in record.get("created") or []:
        if spec.get(direction) == []:
            del spec[direction]
    if record.get("annotations_created") and not annotations and isinstance(metadata, dict):
        del metadata["annotations"]
    return result, warnings


def _remove_listed(spec: dict[str, Any], record: Mapping[str, Any]) -> None:
    """A version 1 record names every rule and CIDR it added: remove those."""
    for direction, added_rules in _entries(record.get("rules")):
        rules = spec.get(direction)
        if isinstance(rules, list) and isinstance(added_rules, list):
            for added in added_rules:
                if added in rules:
                    rules.remove(added)
    for direction, by_index in _entries(record.get("peers")):
        rules = spec.get(direction)
        if not isinstance(rules, list) or direction not in PEER_KEY:
            continue
        for index, cidrs in _entries(by_index):
            if not index.isdigit() or int(index) >= len(rules) or not isinstance(rules[int(index)], dict):
                continue
            peers = rules[int(index)].get(PEER_KEY[direction])  # type: ignore[index]
            if isinstance(peers, list) and isinstance(cidrs, list):
                peers[:] = [p for p in peers if _plain_block(p) not in set(cidrs)]


def _remove_counted(spec: dict[str, Any], record: Mapping[str, Any]) -> list[str]:
    """A version 2 record counts what it added and digests it: remove exactly those items.

    Rules first (they were appended after the policy's own, whose indexes the peers use).
    Items that no longer match their digest were edited since: they are left in place.
    """
    edited: list[str] = []
    for direction, summary in _entries(record.get("rules")):
        rules = spec.get(direction)
        where = _window(rules, summary) if isinstance(rules, list) else None
        if where is None or not isinstance(rules, list):
            edited.append(f"spec.{direction} rules")
        else:
            del rules[where]
    for direction, by_index in _entries(record.get("peers")):
        rules = spec.get(direction)
        if not isinstance(rules, list) or direction not in PEER_KEY:
            continue
        for index, summary in _entries(by_index):
            rule = rules[int(index)] if index.isdigit() and int(index) < len(rules) else None
            peers = rule.get(PEER_KEY[direction]) if isinstance(rule, dict) else None  # type: ignore[index]
            where = _window(peers, summary) if isinstance(peers, list) else None
            if where is None or not isinstance(peers, list):
                edited.append(f"spec.{direction}[{index}] peers")
            else:
                del peers[where]
    if not edited:
        return []
    return [
        f"{ENRICHMENT}: what it added to {', '.join(edited)} was changed since; those parts were left as they are"
    ]


def added_rules(policy: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The rules enrichment appended to `policy`, by direction (the secondary networks' ports)."""
    raw = string_map(object_field(policy, "metadata").get("annotations")).get(ENRICHMENT)
    try:
        record = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    spec = object_field(policy, "spec")
    found: dict[str, list[Any]] = {}
    for direction, summary in _entries(record.get("rules") if isinstance(record, dict) else None):
        rules = spec.get(direction)
        if record.get("v") == 1 and isinstance(summary, list):
            found[direction] = [r for r in summary if isinstance(rules, list) and r in rules]
        elif isinstance(rules, list) and (where := _window(rules, summary)) is not None:
            found[direction] = rules[where]
    return found


def _entries(value: object) -> list[tuple[str, Any]]:
    return [(str(k), v) for k, v in value.items()] if isinstance(value, dict) else []


def companion_policy(enrichment: Enrichment, original: Mapping[str, Any]) -> dict[str, Any] | None:
    """The MultiNetworkPolicy that enforces `original`'s intent on the secondary networks."""
    if not enrichment.networks:
        return None
    metadata = object_field(original, "metadata")
    base, _ = remove_enrichment(original)
    spec = {
        k: v
        for k, v in object_field(base, "spec").items()
        if k in ("podSelector", "policyTypes", "ingress", "egress")
    }
    # The secondary networks' own ports (multihome.io/ports) are what the companion is for:
    # on the secondary interfaces they hold, every protocol and port as the NAD declares.
    for direction, rules in added_rules(enrichment.policy).items():
        current = spec.get(direction)
        spec[direction] = [*(current if isinstance(current, list) else []), *copy.deepcopy(rules)]
    companion_metadata: dict[str, Any] = {
        "name": f"{metadata.get('name', '')}-multihome",
        "namespace": metadata.get("namespace") or "default",
        "labels": {"app.kubernetes.io/managed-by": "multihome"},
        "annotations": {MULTI_POLICY_FOR: ",".join(n.ref for n in enrichment.networks)},
    }
    if metadata.get("uid"):
        companion_metadata["ownerReferences"] = [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "name": metadata.get("name"),
                "uid": metadata["uid"],
                "blockOwnerDeletion": False,
            }
        ]
    return {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": companion_metadata,
        "spec": spec,
    }


class NetworkPolicyEnricher:
    """`POST /mutate/networkpolicies`: enrich on CREATE and UPDATE.

    Holds the Pod network index between requests and rebuilds it when the state has
    changed and the index is older than `max_age` seconds: Pods churn all the time,
    and a policy enriched on a few seconds' old view is corrected by the reconciler.
    """

    def __init__(self, max_age: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.clock = max_age, clock
        self._lock = threading.Lock()
        self._index: PodNetworks | None = None
        self._generation = -1
        self._built_at = 0.0

    def networks(self, state: ClusterState) -> PodNetworks:
        """The index for `state`, no staler than `max_age` once the state has changed."""
        with self._lock:
            generation = state.generation()
            stale = generation != self._generation and self.clock() - self._built_at >= self.max_age
            if self._index is None or self._index.state is not state or stale:
                self._index = PodNetworks(state)
                self._generation, self._built_at = generation, self.clock()
            return self._index

    def __call__(
        self, request: AdmissionRequest, state: ClusterState, admission: AdmissionPolicy
    ) -> Decision:
        del admission  # no admission policy applies to enrichment
        policy = request.get("object")
        if request["operation"] not in ("CREATE", "UPDATE") or not isinstance(policy, dict):
            return allowed()
        if not object_field(policy, "metadata").get("namespace") and request.get("namespace"):
            policy = {
                **policy,
                "metadata": {**object_field(policy, "metadata"), "namespace": request["namespace"]},
            }
        namespace = state.namespace(str(object_field(policy, "metadata").get("namespace") or "default"))
        if namespace is not None and namespace.ignored:
            return allowed()
        enrichment = enrich_policy(policy, state, self.networks(state))
        return patched(
            request["object"] or {}, _with_namespace_of(enrichment.policy, request), enrichment.warnings
        )


def _with_namespace_of(policy: dict[str, Any], request: AdmissionRequest) -> dict[str, Any]:
    """The enriched policy as received: no namespace written where the request had none."""
    original = request.get("object") or {}
    metadata = policy.get("metadata")
    if not object_field(original, "metadata").get("namespace") and isinstance(metadata, dict):
        metadata.pop("namespace", None)
    return policy
