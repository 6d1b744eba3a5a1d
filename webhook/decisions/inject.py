"""Inject: add the networks of the AttachmentRules that select a Pod to its annotation.

The Pod's own entries win. A rule network whose (namespace, name) is already
present, or whose explicit interface name is taken, is not added; between rules
the higher priority (then the name) wins and the loser is named in a warning. A
rule network without an interface name would get the next `netN` by position;
when an explicit name already holds that `netN`, it is given the first free
`netN` explicitly, so Multus never sees two interfaces with one name. Re-running
injection on its own output adds nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from webhook.admission.review import AdmissionRequest, Decision, allowed, annotations_patch
from webhook.decisions.checks import CHECKS
from webhook.decisions.policy import AdmissionPolicy
from webhook.decisions.snapshot import ClusterState, Namespace
from webhook.multus.annotations import INJECT, INJECTED_BY, NETWORKS, SECONDARY_IPS_GATE
from webhook.multus.json_types import object_field, string_map
from webhook.multus.nad import NetworkAttachment, vpc_routed
from webhook.multus.networks import (
    Form,
    NetworkSelection,
    detect_form,
    format_network_selections,
    interface_names,
    parse_network_selections,
)
from webhook.rules import AttachmentRule, RuleBook

POD_SOURCE = "the Pod's own annotation"


@dataclass(frozen=True)
class Skipped:
    """A rule network that was not added, and why."""

    rule: str
    network: NetworkSelection
    reason: str
    # The check it fails (MH024 an interface taken, MH021 the VPC CNI); "" when the same
    # network is simply there already.
    check: str = ""

    @property
    def conflict(self) -> bool:
        """True when the rule's network could not be added, not merely was there already."""
        return bool(self.check)


@dataclass(frozen=True)
class InjectionPlan:
    """The networks a Pod ends up with, and what each rule added or could not add."""

    selections: tuple[NetworkSelection, ...]
    added: tuple[tuple[str, NetworkSelection], ...] = ()
    skipped: tuple[Skipped, ...] = ()

    @property
    def contributors(self) -> list[str]:
        """Names of the rules that added at least one network, in precedence order."""
        return list(dict.fromkeys(rule for rule, _ in self.added))


def plan_injection(
    existing: Sequence[NetworkSelection],
    rules: Sequence[AttachmentRule],
    pod_namespace: str,
    state: ClusterState | None = None,
) -> InjectionPlan:
    """Merge the networks of `rules` (in precedence order) after the Pod's `existing` ones."""
    result = list(existing)
    owner_of_key = {s.key: POD_SOURCE for s in existing}
    owner_of_interface = dict.fromkeys(interface_names(existing), POD_SOURCE)
    added: list[tuple[str, NetworkSelection]] = []
    skipped: list[Skipped] = []
    for rule in rules:
        source = f"AttachmentRule {rule.name} (priority {rule.priority})"
        for given in rule.networks_for(pod_namespace):
            network = given
            if network.key in owner_of_key:
                reason = f"network {network.ref} is already attached by {owner_of_key[network.key]}"
                skipped.append(Skipped(rule.name, network, reason))
                continue
            conflict = _conflict(network, owner_of_interface, state)
            if conflict:
                check, reason = conflict
                skipped.append(Skipped(rule.name, network, reason, check))
                continue
            position_name = f"net{len(result) + 1}"
            if network.interface is None and position_name in owner_of_interface:
                network = replace(network, interface=_free_interface(owner_of_interface))
            interface = network.interface or position_name
            result.append(network)
            added.append((rule.name, network))
            owner_of_key[network.key] = source
            owner_of_interface[interface] = source
    return InjectionPlan(tuple(result), tuple(added), tuple(skipped))


def rules_for_pod(state: ClusterState, namespace: str, pod_labels: Mapping[str, str]) -> list[AttachmentRule]:
    """The rules that inject into a Pod with these labels in `namespace`: none where it is ignored."""
    found = state.namespace(namespace)
    if found is not None and found.ignored:
        return []
    return state.rulebook().for_pod(found.labels if found else {}, pod_labels)


def _conflict(
    network: NetworkSelection, owner_of_interface: Mapping[str, str], state: ClusterState | None
) -> tuple[str, str] | None:
    """The check a rule's network fails here and why, or None when it can be added."""
    if network.interface and network.interface in owner_of_interface:
        return (
            "MH024",
            f"interface {network.interface} is already given by {owner_of_interface[network.interface]}",
        )
    nad = state.nad(*network.key) if state is not None else None
    if nad is not None and nad.vpc_cni_types:
        return "MH021", (
            f"NetworkAttachmentDefinition {network.ref} uses the Amazon VPC CNI "
            f"({', '.join(nad.vpc_cni_types)}), which EKS supports only as the primary network"
        )
    return None


def _free_interface(taken: Mapping[str, str]) -> str:
    number = 1
    while f"net{number}" in taken:
        number += 1
    return f"net{number}"


def inject_pod(request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy) -> Decision:
    """`POST /mutate/pods`: add the networks the Pod's rules give it (and, with IP management, the gate)."""
    pod = request.get("object")
    if request["operation"] != "CREATE" or not isinstance(pod, dict):
        return allowed()
    metadata, spec = object_field(pod, "metadata"), object_field(pod, "spec")
    annotations = string_map(metadata.get("annotations"))
    if annotations.get(INJECT) == "false" or spec.get("hostNetwork") is True:
        return allowed()
    pod_namespace = str(metadata.get("namespace") or request.get("namespace") or "default")
    rules = rules_for_pod(state, pod_namespace, string_map(metadata.get("labels")))
    current = annotations.get(NETWORKS)
    if not rules and (current is None or not policy.readiness_gate):
        return allowed()
    try:
        existing = parse_network_selections(current, pod_namespace) if current is not None else []
    except ValueError as err:
        return allowed(
            [f"multihome did not inject networks: {NETWORKS} is invalid ({err}); fix the annotation"]
        )
    plan = plan_injection(existing, rules, pod_namespace, state)
    warnings = [
        f"{s.check} {CHECKS[s.check].name}: AttachmentRule {s.rule}: not adding {s.network.ref}: {s.reason}"
        for s in plan.skipped
        if s.conflict
    ]
    gate = _readiness_gate(spec, plan.selections, state) if policy.readiness_gate else ()
    if not plan.added:
        return Decision(True, warnings=tuple(warnings), patch=gate) if gate else allowed(warnings)
    form: Form = detect_form(current) if current else "comma"
    previous = [r for r in annotations.get(INJECTED_BY, "").split(",") if r.strip()]
    changes = {
        NETWORKS: format_network_selections(plan.selections, form),
        INJECTED_BY: ",".join(dict.fromkeys([*previous, *plan.contributors])),
    }
    decision = annotations_patch(pod, changes, warnings)
    return replace(decision, patch=(*decision.patch, *gate))


def _readiness_gate(
    spec: Mapping[str, Any], selections: Sequence[NetworkSelection], state: ClusterState
) -> tuple[dict[str, Any], ...]:
    """The patch adding the `multihome.io/secondary-ips` readiness gate, when a network routes in the VPC.

    The controller's IP management sets the condition once the Pod's addresses are on its
    ENI; until then the Pod stays out of its Services' endpoints.
    """
    routed = any((nad := state.nad(*s.key)) is not None and vpc_routed(nad) for s in selections)
    gates = spec.get("readinessGates")
    present = isinstance(gates, list) and any(
        isinstance(g, dict) and g.get("conditionType") == SECONDARY_IPS_GATE for g in gates
    )
    if not routed or present:
        return ()
    gate = {"conditionType": SECONDARY_IPS_GATE}
    if isinstance(gates, list):
        return ({"op": "add", "path": "/spec/readinessGates/-", "value": gate},)
    return ({"op": "add", "path": "/spec/readinessGates", "value": [gate]},)


@dataclass(frozen=True)
class _Remembered:
    """A decision, and the objects of the state it was made from."""

    decision: Decision
    state: ClusterState
    namespace: Namespace | None
    rulebook: RuleBook
    nads: tuple[tuple[tuple[str, str], NetworkAttachment | None], ...]

    def holds_for(self, state: ClusterState, namespace: str) -> bool:
        return (
            state is self.state
            and state.rulebook() is self.rulebook
            and state.namespace(namespace) is self.namespace
            and all(state.nad(*key) is nad for key, nad in self.nads)
        )


class PodInjector:
    """`POST /mutate/pods`: `inject_pod`, with the decisions for identical Pods remembered.

    A ReplicaSet, a Job or a DaemonSet sends the same Pod for every replica: the API
    server gives a Pod its name and uid only after the mutating webhooks have run. The
    decision depends on the Pod's namespace, labels, three annotations and the shape of
    its metadata, and on the state's namespace, rule book and the NADs the rules name.
    A remembered decision is used only while those are the very objects it was made
    with; the state replaces an object when it changes, so any change decides afresh.
    """

    SIZE: Final = 4096

    def __init__(self) -> None:
        self._memo: dict[tuple[object, ...], _Remembered] = {}
        self._lock = threading.Lock()

    def __call__(self, request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy) -> Decision:
        # With the readiness gate the decision also reads spec.readinessGates and the NADs the
        # Pod names itself, which the remembered entries do not track: decided every time.
        plain = None if policy.readiness_gate else _plain_pod(request)
        if plain is None:
            return inject_pod(request, state, policy)
        key, namespace, labels = plain
        found = self._memo.get(key)
        if found is not None and found.holds_for(state, namespace):
            return found.decision
        # What the decision is made from, read before it is made: a change in between
        # leaves an entry that no longer holds, never a wrong one.
        space, book = state.namespace(namespace), state.rulebook()
        networks = (
            n.key for rule in rules_for_pod(state, namespace, labels) for n in rule.networks_for(namespace)
        )
        nads = tuple((k, state.nad(*k)) for k in dict.fromkeys(networks))
        decision = inject_pod(request, state, policy)
        with self._lock:
            if len(self._memo) >= self.SIZE:
                self._memo.clear()
            self._memo[key] = _Remembered(decision, state, space, book, nads)
        return decision


_ABSENT: Final = object()


def _plain_pod(request: AdmissionRequest) -> tuple[tuple[object, ...], str, dict[str, str]] | None:
    """What of a Pod `inject_pod` decides on, its namespace and labels; None if not plain enough to remember."""
    pod = request.get("object")
    if request["operation"] != "CREATE" or not isinstance(pod, dict):
        return None
    metadata, spec = pod.get("metadata"), pod.get("spec")
    if not isinstance(metadata, dict) or not isinstance(spec, dict):
        return None
    annotations, labels = metadata.get("annotations"), metadata.get("labels")
    if annotations is None:
        values: tuple[object, ...] = (False,)
    elif isinstance(annotations, dict):
        # Absent and null are told apart: the patch adds a key that is absent, replaces a null.
        values = (True, *(annotations.get(k, _ABSENT) for k in (INJECT, NETWORKS, INJECTED_BY)))
        if not all(v is None or v is _ABSENT or isinstance(v, str) for v in values[1:]):
            return None
    else:
        return None
    if labels is None:
        labels = {}
    elif not (isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())):
        return None
    namespace = str(metadata.get("namespace") or request.get("namespace") or "default")
    key = (namespace, frozenset(labels.items()), *values, spec.get("hostNetwork") is True)
    return key, namespace, labels
