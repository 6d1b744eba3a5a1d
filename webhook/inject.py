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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from webhook.annotations import INJECT, INJECTED_BY, NETWORKS
from webhook.json_types import object_field, string_map
from webhook.networks import (
    Form,
    NetworkSelection,
    detect_form,
    format_network_selections,
    interface_names,
    parse_network_selections,
)
from webhook.review import AdmissionRequest, Decision, allowed, annotations_patch
from webhook.rules import AttachmentRule
from webhook.settings import Settings
from webhook.state import ClusterState

POD_SOURCE = "the Pod's own annotation"


@dataclass(frozen=True)
class Skipped:
    """A rule network that was not added, and why."""

    rule: str
    network: NetworkSelection
    reason: str
    conflict: bool = True  # False when the same network is simply there already


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
                skipped.append(Skipped(rule.name, network, reason, conflict=False))
                continue
            conflict = _conflict(network, owner_of_interface, state)
            if conflict:
                skipped.append(Skipped(rule.name, network, conflict))
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
) -> str | None:
    if network.interface and network.interface in owner_of_interface:
        return f"interface {network.interface} is already given by {owner_of_interface[network.interface]}"
    nad = state.nad(*network.key) if state is not None else None
    if nad is not None and nad.vpc_cni_types:
        return (
            f"NetworkAttachmentDefinition {network.ref} uses the Amazon VPC CNI "
            f"({', '.join(nad.vpc_cni_types)}), which EKS supports only as the primary network"
        )
    return None


def _free_interface(taken: Mapping[str, str]) -> str:
    number = 1
    while f"net{number}" in taken:
        number += 1
    return f"net{number}"


def inject_pod(request: AdmissionRequest, state: ClusterState, settings: Settings) -> Decision:
    """`POST /mutate/pods`: add the networks the Pod's rules give it."""
    del settings  # inject has no settings of its own; the signature is every handler's
    pod = request.get("object")
    if request["operation"] != "CREATE" or not isinstance(pod, dict):
        return allowed()
    metadata, spec = object_field(pod, "metadata"), object_field(pod, "spec")
    annotations = string_map(metadata.get("annotations"))
    if annotations.get(INJECT) == "false" or spec.get("hostNetwork") is True:
        return allowed()
    pod_namespace = str(metadata.get("namespace") or request.get("namespace") or "default")
    rules = rules_for_pod(state, pod_namespace, string_map(metadata.get("labels")))
    if not rules:
        return allowed()
    current = annotations.get(NETWORKS)
    try:
        existing = parse_network_selections(current, pod_namespace) if current is not None else []
    except ValueError as err:
        return allowed(
            [f"multihome did not inject networks: {NETWORKS} is invalid ({err}); fix the annotation"]
        )
    plan = plan_injection(existing, rules, pod_namespace, state)
    warnings = [
        f"AttachmentRule {s.rule}: not adding {s.network.ref}: {s.reason}" for s in plan.skipped if s.conflict
    ]
    if not plan.added:
        return allowed(warnings)
    form: Form = detect_form(current) if current else "comma"
    previous = [r for r in annotations.get(INJECTED_BY, "").split(",") if r.strip()]
    changes = {
        NETWORKS: format_network_selections(plan.selections, form),
        INJECTED_BY: ",".join(dict.fromkeys([*previous, *plan.contributors])),
    }
    return annotations_patch(pod, changes, warnings)
