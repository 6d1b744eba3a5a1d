"""Each rule judged once: what is wrong with a NAD, its addresses, a Pod's networks, a rule.

An `Issue` is one failed check of the catalogue with what is wrong (the field, the
value) and the fix. Admission (`validate`) says it as a denial or a warning, the audit
as a finding, the controllers as a status reason or an Event: the same ID and the same
words everywhere. Which issues deny is the admission policy's call, not this module's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from webhook.decisions.allocation import (
    HOST_LOCAL_FIX,
    OVERLAP_FIX,
    Overlap,
    annotation_mismatch,
    host_local_pools,
    reserved_in_pools,
)
from webhook.decisions.checks import CHECKS
from webhook.decisions.snapshot import ClusterState, Namespace
from webhook.decisions.wording import listed, plural
from webhook.multus.annotations import CIDRS, DEFAULT_NETWORK, NETWORKS, PREFIX
from webhook.multus.kube_names import is_dns1123_label
from webhook.multus.nad import UNSUPPORTED_TYPES, NetworkAttachment
from webhook.multus.networks import (
    NetworkSelection,
    duplicate_interfaces,
    parse_default_network,
    parse_network_selections,
)
from webhook.rules import AttachmentRule

VPC_FIX = "use ipvlan or host-device for secondary interfaces; the Amazon VPC CNI stays on eth0"


@dataclass(frozen=True)
class Issue:
    """One failed check: its catalogue ID, what is wrong (naming the field and value), the fix."""

    check: str
    message: str
    fix: str

    def text(self, subject: str = "") -> str:
        """As a person reads it at admission: `MH011 pod-vpc-cni-reference: Pod ns/x: what; fix (more: URL)`."""
        where = f"{subject}: " if subject else ""
        check = CHECKS[self.check]
        return f"{check.id} {check.name}: {where}{self.message}; {self.fix} (more: {check.url})"


# NetworkAttachmentDefinitions -------------------------------------------------------------


def nad_issues(nad: NetworkAttachment) -> Iterator[Issue]:
    """What is wrong with a NAD on its own: its name, config, VPC CNI, types, ports, CIDRs."""
    if not is_dns1123_label(nad.name):
        yield Issue(
            "MH002",
            f'metadata.name "{nad.name}" is not a DNS-1123 label, so Pods cannot name it in the '
            "comma form of the networks annotation",
            "use lower case letters, digits and '-'",
        )
    if nad.config_error:
        yield Issue("MH002", nad.config_error, "fix spec.config; Multus fails every Pod that attaches it")
    for cni_type in nad.vpc_cni_types:
        where = "spec.config is empty and the name" if nad.on_disk else "spec.config plugin type"
        yield Issue(
            "MH001",
            f'{where} "{cni_type}" is the Amazon VPC CNI, which EKS supports only as the primary network',
            VPC_FIX,
        )
    for cni_type in nad.unsupported_types:
        yield Issue(
            "MH003",
            f'spec.config plugin type "{cni_type}" is not supported by EKS for secondary interfaces',
            UNSUPPORTED_TYPES[cni_type],
        )
    if nad.ports_error:
        yield Issue("MH002", f"metadata.annotations {nad.ports_error}", "fix the annotation")
    if nad.addressing.error:
        yield Issue("MH002", nad.addressing.error, "fix spec.config; Multus fails every Pod that attaches it")
    elif not nad.addressing.known and not nad.config_error and not nad.vpc_cni_types:
        yield Issue(
            "MH004",
            f"NetworkPolicies cannot be enriched for this network: {nad.addressing.unknown_reason}",
            f"declare the network's CIDRs in the {CIDRS} annotation",
        )


def address_issues(nad: NetworkAttachment, overlaps: Iterable[Overlap]) -> Iterator[Issue]:
    """The address management EKS leaves to its users: overlaps, reserved addresses, host-local."""
    for overlap in overlaps:
        other = overlap.other(nad)
        yield Issue(
            "MH050",
            f"hands out {overlap.addresses} ({plural(overlap.size, 'address')}), which "
            f"NetworkAttachmentDefinition {other.ref} hands out too, so two Pods can get the same address",
            OVERLAP_FIX,
        )
    for reserved in reserved_in_pools(nad):
        yield Issue("MH052", f"spec.config {reserved.message()}", reserved.fix())
    for pool in host_local_pools(nad):
        yield Issue(
            "MH051",
            f"spec.config {pool.where} is host-local, which allocates on each node on its own: Pods on "
            f"different nodes get the same addresses from {pool.subnet}",
            HOST_LOCAL_FIX,
        )
    mismatch = annotation_mismatch(nad)
    if mismatch:
        yield Issue(
            "MH056", mismatch, f"remove {CIDRS}: it is for configs multihome cannot read, not a second truth"
        )


# Pods -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodNetworksJudged:
    """A Pod's network annotations judged: the issues, and the networks it selects when readable."""

    issues: tuple[Issue, ...]
    selections: tuple[NetworkSelection, ...] | None


def pod_issues(
    annotations: Mapping[str, str], namespace: str, state: ClusterState, at: str = ""
) -> PodNetworksJudged:
    """What is wrong with a Pod's network annotations, in `namespace`.

    `at` is where the Pod's metadata sits in the object: "" for a Pod, "spec.template." for a
    workload's Pod template.
    """
    found: list[Issue] = []
    networks_field = f'{at}metadata.annotations["{NETWORKS}"]'
    if DEFAULT_NETWORK in annotations:
        found.append(_default_network_issue(annotations[DEFAULT_NETWORK], at))
    value = annotations.get(NETWORKS)
    if value is None:
        return PodNetworksJudged(tuple(found), ())
    try:
        selections = parse_network_selections(value, namespace)
    except ValueError as err:
        found.append(
            Issue(
                "MH010",
                f"{networks_field} {_quote(value)} is invalid: {err}",
                "fix the annotation; Multus will not start the Pod",
            )
        )
        return PodNetworksJudged(tuple(found), None)
    for interface in duplicate_interfaces(selections):
        found.append(
            Issue(
                "MH013",
                f'{networks_field} gives interface "{interface}" to more than one network',
                "give each network its own interface name (net1, net2, ...)",
            )
        )
    for selection in selections:
        found.extend(_reference_issues(selection, state, networks_field))
    return PodNetworksJudged(tuple(found), tuple(selections))


def not_granted_issue(selection: NetworkSelection, namespace: str, global_namespaces: Iterable[str]) -> Issue:
    """MH017: the Pod in `namespace` takes a network from another that no rule grants it."""
    return Issue(
        "MH017",
        f'metadata.annotations["{NETWORKS}"] references {selection.ref}, in namespace "{selection.namespace}" which no '
        f'AttachmentRule grants to namespace "{namespace}"',
        f'use a network in "{namespace}", in a global namespace '
        f"({', '.join(sorted(global_namespaces)) or 'none'}), or ask your platform team for an AttachmentRule",
    )


def _default_network_issue(value: str, at: str) -> Issue:
    field = f'{at}metadata.annotations["{DEFAULT_NETWORK}"]'
    try:
        selection = parse_default_network(value)
    except ValueError as err:
        return Issue(
            "MH010",
            f"{field} {_quote(value)} is invalid: {err}",
            f"remove {DEFAULT_NETWORK}; attach the network as a secondary in {NETWORKS}",
        )
    return Issue(
        "MH012",
        f"{field} would replace the Amazon VPC CNI with {selection.ref} as the Pod's "
        "primary network, which EKS does not support",
        f"remove the annotation and attach {selection.ref} as a secondary network in {NETWORKS}",
    )


def _reference_issues(selection: NetworkSelection, state: ClusterState, field: str) -> Iterator[Issue]:
    nad = state.nad(*selection.key)
    if nad is None:
        yield Issue(
            "MH014",
            f"{field} references NetworkAttachmentDefinition {selection.ref}, which does not "
            "exist; Multus will keep the Pod waiting until it does",
            "create it or fix the name",
        )
        return
    for cni_type in nad.vpc_cni_types:
        yield Issue(
            "MH011",
            f"{field} references NetworkAttachmentDefinition {nad.ref}, whose type "
            f'"{cni_type}" is the Amazon VPC CNI, which EKS supports only as the primary network',
            "attach an ipvlan or host-device network instead",
        )
    for cni_type in nad.unsupported_types:
        yield Issue(
            "MH003",
            f"{field} references NetworkAttachmentDefinition {nad.ref}, whose type "
            f'"{cni_type}" EKS does not support for secondary interfaces',
            UNSUPPORTED_TYPES[cni_type],
        )


def _quote(value: str) -> str:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return '"' + shown.replace('"', '\\"') + '"'


# AttachmentRules --------------------------------------------------------------------------


def invalid_rule_issue(error: str) -> Issue:
    """MH020: a rule that does not compile; `error` names the rule and the field already."""
    return Issue("MH020", error, "fix the rule (multihome rules check FILE)")


def rule_issues(
    rule: AttachmentRule, state: ClusterState, namespaces: Sequence[Namespace] = ()
) -> Iterator[Issue]:
    """What is wrong with a valid AttachmentRule beside the cluster: its networks and its selector.

    `namespaces` are the state's namespaces when the caller has them listed already.
    """
    listed_namespaces = list(namespaces) or list(state.namespaces())
    selected = [
        ns.name for ns in listed_namespaces if not ns.ignored and rule.namespace_selector.matches(ns.labels)
    ]
    missing: dict[int, list[str]] = {}
    for index, network in rule.given_networks(selected):
        nad = state.nad(*network.key)
        if nad is None:
            missing.setdefault(index, []).append(network.namespace)
        elif nad.vpc_cni_types:
            yield Issue(
                "MH021",
                f"spec.networks[{index}] gives NetworkAttachmentDefinition {nad.ref}, whose type "
                f'"{nad.vpc_cni_types[0]}" is the Amazon VPC CNI, which EKS supports only as the primary network',
                VPC_FIX,
            )
    for index, where in sorted(missing.items()):
        network = rule.networks[index]
        if network.explicit_namespace:
            yield Issue(
                "MH022",
                f"spec.networks[{index}] gives NetworkAttachmentDefinition {network.ref}, which does not "
                "exist; Pods given it will wait until it does",
                f"create {network.ref} or remove it from the rule",
            )
        else:
            yield Issue(
                "MH022",
                f"spec.networks[{index}] gives {network.name} in the Pod's namespace, and no "
                f"NetworkAttachmentDefinition {network.name} exists in {listed(where)}, which the rule "
                "selects; Pods given it will wait until it does",
                f"create {network.name} in those namespaces, or name the namespace it lives in "
                f"(spec.networks[{index}].namespace)",
            )
    if not any(rule.namespace_selector.matches(ns.labels) for ns in listed_namespaces):
        yield Issue(
            "MH023",
            f"spec.namespaceSelector ({rule.namespace_selector}) selects no namespace today",
            f"label the namespaces it is for, e.g. kubectl label namespace NAME {PREFIX}profile=VALUE, "
            "or delete the rule",
        )
