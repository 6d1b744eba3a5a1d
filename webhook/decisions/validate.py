"""Validate: the EKS rules for Multus, checked at admission.

Each check is a pure function from an object (and the state and policy) to
`Problems`: errors deny, warnings are returned to the user. Every message names
the object, the field, the bad value and the fix. Two rules keep clusters
recoverable: DELETE is never denied, and an UPDATE that leaves the checked fields
as they were is allowed even if the object already breaks a rule (with the
problems as warnings), so stuck objects can still have finalizers removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.admission.review import AdmissionRequest, Decision, allowed, denied
from webhook.decisions.allocation import (
    HOST_LOCAL_FIX,
    OVERLAP_FIX,
    PoolBounds,
    annotation_mismatch,
    host_local_pools,
    overlaps_with,
    reserved_in_pools,
)
from webhook.decisions.inject import rules_for_pod
from webhook.decisions.label_rights import (
    LABEL_GROUP,
    LABEL_RESOURCE,
    LABEL_VERB,
    Authorizer,
    NoAuthorizer,
    Subject,
    principals_text,
)
from webhook.decisions.policy import AdmissionPolicy
from webhook.decisions.snapshot import ClusterState
from webhook.decisions.wording import listed
from webhook.multus.annotations import DEFAULT_NETWORK, NETWORKS, PREFIX
from webhook.multus.json_types import object_field, string_map
from webhook.multus.kube_names import is_dns1123_label
from webhook.multus.nad import UNSUPPORTED_TYPES, NetworkAttachment, parse_network_attachment
from webhook.multus.networks import (
    NetworkSelection,
    duplicate_interfaces,
    parse_default_network,
    parse_network_selections,
)
from webhook.rules import AttachmentRule, parse_rule

VPC_FIX = "use ipvlan or host-device for secondary interfaces"


@dataclass
class Problems:
    """What a check found: errors deny, warnings inform."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, message: str, *, deny: bool) -> None:
        """Record `message` as an error when `deny`, else as a warning."""
        (self.errors if deny else self.warnings).append(message)


# NetworkAttachmentDefinitions -------------------------------------------------------------


def nad_problems(nad: NetworkAttachment, policy: AdmissionPolicy, state: ClusterState) -> Problems:
    """Everything wrong with a NetworkAttachmentDefinition, on its own and beside the others."""
    found = Problems()
    what = f"NetworkAttachmentDefinition {nad.ref}"
    if not is_dns1123_label(nad.name):
        found.add(
            f'{what}: metadata.name "{nad.name}" is not a DNS-1123 label, so Pods cannot name it '
            "in the comma form of the networks annotation; use lower case letters, digits and '-'",
            deny=True,
        )
    if nad.config_error:
        found.add(f"{what}: {nad.config_error}", deny=True)
    for cni_type in nad.vpc_cni_types:
        where = "spec.config is empty and the name" if nad.on_disk else "spec.config plugin type"
        found.add(
            f'{what}: {where} "{cni_type}" is the Amazon VPC CNI, which EKS supports only as the '
            f"primary network; {VPC_FIX}",
            deny=True,
        )
    for cni_type in nad.unsupported_types:
        found.add(
            f'{what}: spec.config plugin type "{cni_type}" is not supported by EKS for secondary '
            f"interfaces: {UNSUPPORTED_TYPES[cni_type]}",
            deny=policy.unsupported_types == "deny",
        )
    if nad.ports_error:
        found.add(f"{what}: metadata.annotations {nad.ports_error}", deny=True)
    if nad.addressing.error:
        found.add(f"{what}: {nad.addressing.error}", deny=True)
    elif not nad.addressing.known and not nad.config_error and not nad.vpc_cni_types:
        found.add(
            f"{what}: NetworkPolicies cannot be enriched for this network: {nad.addressing.unknown_reason}",
            deny=False,
        )
    _check_addresses(what, nad, policy, state, found)
    return found


def _check_addresses(
    what: str, nad: NetworkAttachment, policy: AdmissionPolicy, state: ClusterState, found: Problems
) -> None:
    """The address management EKS leaves to its users (webhook/decisions/allocation.py)."""
    deny = policy.ip_conflicts == "deny"
    for overlap in overlaps_with(nad, PoolBounds.of(state.nads())):
        other = overlap.other(nad)
        found.add(
            f"{what}: hands out {overlap.addresses}, which NetworkAttachmentDefinition {other.ref} "
            f"hands out too, so two Pods can get the same address; {OVERLAP_FIX}",
            deny=deny,
        )
    for reserved in reserved_in_pools(nad):
        found.add(f"{what}: spec.config {reserved.message()}; {reserved.fix()}", deny=deny)
    for pool in host_local_pools(nad):
        found.add(
            f"{what}: spec.config {pool.where} is host-local, which allocates on each node on its own: "
            f"Pods on different nodes get the same addresses from {pool.subnet}; {HOST_LOCAL_FIX}",
            deny=False,
        )
    mismatch = annotation_mismatch(nad)
    if mismatch:
        found.add(
            f"{what}: {mismatch}; remove the annotation (it is for configs multihome cannot read)", deny=False
        )


def validate_network_attachment(
    request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy
) -> Decision:
    """`POST /validate/networkattachmentdefinitions`."""
    return _validate(request, lambda obj: nad_problems(_as_nad(obj, request), policy, state), _spec_of)


def _as_nad(obj: Mapping[str, Any], request: AdmissionRequest) -> NetworkAttachment:
    if request.get("namespace") and not object_field(obj, "metadata").get("namespace"):
        obj = {
            **obj,
            "metadata": {**object_field(obj, "metadata"), "namespace": request["namespace"]},
        }
    return parse_network_attachment(obj)


def _spec_of(obj: Mapping[str, Any]) -> object:
    metadata = object_field(obj, "metadata")
    annotations = string_map(metadata.get("annotations"))
    return (obj.get("spec"), {k: v for k, v in annotations.items() if k.startswith(PREFIX)})


# Pods -------------------------------------------------------------------------------------


def pod_problems(
    pod: Mapping[str, Any], pod_namespace: str, state: ClusterState, policy: AdmissionPolicy
) -> Problems:
    """Everything wrong with a Pod's network annotations."""
    found = Problems()
    metadata = object_field(pod, "metadata")
    annotations = string_map(metadata.get("annotations"))
    name = metadata.get("name") or metadata.get("generateName") or "(unnamed)"
    what = f"Pod {pod_namespace}/{name}"
    if DEFAULT_NETWORK in annotations:
        _check_default_network(what, annotations[DEFAULT_NETWORK], policy, found)
    value = annotations.get(NETWORKS)
    if value is None:
        return found
    field_name = f'metadata.annotations["{NETWORKS}"]'
    try:
        selections = parse_network_selections(value, pod_namespace)
    except ValueError as err:
        found.add(f"{what}: {field_name} {_quote(value)} is invalid: {err}", deny=True)
        return found
    for interface in duplicate_interfaces(selections):
        found.add(
            f'{what}: {field_name} gives interface "{interface}" to more than one network; give '
            "each network its own interface name (net1, net2, ...)",
            deny=True,
        )
    granted = _granted_namespaces(pod_namespace, string_map(metadata.get("labels")), state, policy)
    for selection in selections:
        _check_reference(what, field_name, selection, state, policy, found)
        if granted is not None and selection.namespace not in granted:
            found.add(
                f"{what}: {field_name} references {selection.ref}, in namespace "
                f'"{selection.namespace}" which no AttachmentRule grants to namespace '
                f'"{pod_namespace}"; use a network in "{pod_namespace}", in a global namespace '
                f"({', '.join(sorted(policy.global_namespaces)) or 'none'}), or ask your "
                "platform team for an AttachmentRule",
                deny=policy.namespace_isolation == "strict",
            )
    return found


def _check_default_network(what: str, value: str, policy: AdmissionPolicy, found: Problems) -> None:
    field_name = f'metadata.annotations["{DEFAULT_NETWORK}"]'
    try:
        selection = parse_default_network(value)
    except ValueError as err:
        found.add(f"{what}: {field_name} {_quote(value)} is invalid: {err}", deny=True)
        return
    found.add(
        f"{what}: {field_name} would replace the Amazon VPC CNI with {selection.ref} as the "
        "Pod's primary network, which EKS does not support; remove the annotation and "
        f"attach {selection.ref} as a secondary network in {NETWORKS}",
        deny=policy.default_network == "deny",
    )


def _check_reference(
    what: str,
    field_name: str,
    selection: NetworkSelection,
    state: ClusterState,
    policy: AdmissionPolicy,
    found: Problems,
) -> None:
    nad = state.nad(*selection.key)
    if nad is None:
        found.add(
            f"{what}: {field_name} references NetworkAttachmentDefinition {selection.ref}, "
            "which does not exist; Multus will keep the Pod waiting until it does: create it "
            "or fix the name",
            deny=policy.missing_networks == "deny",
        )
        return
    for cni_type in nad.vpc_cni_types:
        found.add(
            f"{what}: {field_name} references NetworkAttachmentDefinition {nad.ref}, whose "
            f'type "{cni_type}" is the Amazon VPC CNI, which EKS supports only as the primary '
            f"network; attach an ipvlan or host-device network instead",
            deny=True,
        )
    for cni_type in nad.unsupported_types:
        found.add(
            f"{what}: {field_name} references NetworkAttachmentDefinition {nad.ref}, whose "
            f'type "{cni_type}" EKS does not support for secondary interfaces: '
            f"{UNSUPPORTED_TYPES[cni_type]}",
            deny=policy.unsupported_types == "deny",
        )


def _granted_namespaces(
    pod_namespace: str, pod_labels: Mapping[str, str], state: ClusterState, policy: AdmissionPolicy
) -> set[str] | None:
    """Namespaces the Pod may take networks from; None when isolation is off."""
    if policy.namespace_isolation == "off":
        return None
    granted = {pod_namespace, *policy.global_namespaces}
    for rule in rules_for_pod(state, pod_namespace, pod_labels):
        granted.update(n.namespace for n in rule.networks_for(pod_namespace))
    return granted


def validate_pod(request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy) -> Decision:
    """`POST /validate/pods`."""
    obj = request.get("object") or {}
    pod_namespace = str(
        object_field(obj, "metadata").get("namespace") or request.get("namespace") or "default"
    )
    namespace = state.namespace(pod_namespace)
    if namespace is not None and namespace.ignored:
        return allowed()
    return _validate(
        request,
        lambda pod: pod_problems(pod, pod_namespace, state, policy),
        _network_annotations,
    )


def _network_annotations(obj: Mapping[str, Any]) -> object:
    annotations = string_map(object_field(obj, "metadata").get("annotations"))
    return (annotations.get(NETWORKS), annotations.get(DEFAULT_NETWORK))


# AttachmentRules --------------------------------------------------------------------------


def rule_problems(obj: Mapping[str, Any], state: ClusterState) -> Problems:
    """Everything wrong with an AttachmentRule."""
    found = Problems()
    try:
        rule = parse_rule(obj)
    except ValueError as err:
        found.add(str(err), deny=True)
        return found
    _check_rule_networks(rule, state, found)
    if not any(rule.namespace_selector.matches(ns.labels) for ns in state.namespaces()):
        found.add(
            f"AttachmentRule {rule.name}: spec.namespaceSelector ({rule.namespace_selector}) "
            "selects no namespace today; label the namespaces it is for, e.g. "
            f"kubectl label namespace NAME {PREFIX}profile=VALUE",
            deny=False,
        )
    return found


def _check_rule_networks(rule: AttachmentRule, state: ClusterState, found: Problems) -> None:
    selected = [
        ns.name for ns in state.namespaces() if not ns.ignored and rule.namespace_selector.matches(ns.labels)
    ]
    missing: dict[int, list[str]] = {}
    for index, network in rule.given_networks(selected):
        nad = state.nad(*network.key)
        if nad is None:
            missing.setdefault(index, []).append(network.namespace)
            continue
        for cni_type in nad.vpc_cni_types:
            found.add(
                f"AttachmentRule {rule.name}: spec.networks[{index}] references NetworkAttachmentDefinition "
                f'{nad.ref}, whose type "{cni_type}" is the Amazon VPC CNI, which EKS supports only as the '
                f"primary network; {VPC_FIX}",
                deny=True,
            )
    for index, where in missing.items():
        network = rule.networks[index]
        subject = f"AttachmentRule {rule.name}: spec.networks[{index}] references NetworkAttachmentDefinition"
        if network.explicit_namespace:
            text = f"{subject} {network.ref}, which does not exist yet"
        else:
            text = (
                f"{subject} {network.name} in the Pod's namespace, which does not exist in {listed(where)} "
                "(namespaces the rule selects)"
            )
        found.add(f"{text}; Pods given it will wait until it does", deny=False)


def validate_attachment_rule(
    request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy
) -> Decision:
    """`POST /validate/attachmentrules`."""
    del policy
    return _validate(request, lambda obj: rule_problems(obj, state), lambda obj: obj.get("spec"))


# Namespaces -------------------------------------------------------------------------------


class NamespaceLabels:
    """`POST /validate/namespaces`: who may change `multihome.io/` labels, as the authorizer says.

    The static `--label-admins` are asked first (no call at all); then the API server's
    authorizer (verb `label`, group multihome.io, resource namespaces, the namespace's name).
    An authorizer that cannot be asked denies the change and says so.
    """

    def __init__(self, authorizer: Authorizer | None = None) -> None:
        self.authorizer = authorizer or NoAuthorizer()

    def __call__(self, request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy) -> Decision:
        del state
        if request["operation"] not in ("CREATE", "UPDATE"):
            return allowed()
        new = _prefixed_labels(request.get("object"))
        old = _prefixed_labels(request.get("oldObject")) if request["operation"] == "UPDATE" else {}
        changed = sorted(key for key in new.keys() | old.keys() if new.get(key) != old.get(key))
        if not changed:
            return allowed()
        subject = Subject.from_user_info(request.get("userInfo") or {})
        if policy.is_label_admin(subject.username, subject.groups):
            return allowed()
        name = str(request.get("name") or object_field(request.get("object"), "metadata").get("name") or "")
        verdict = self.authorizer.may_label(subject, name)
        if verdict.allowed:
            return allowed()
        why = f"multihome could not ask: {verdict.error}" if verdict.error else "the authorizer refused"
        return denied(
            f"Namespace {name}: metadata.labels {', '.join(changed)}: {PREFIX} labels decide which "
            f'networks Pods get, and user "{subject.username}" may not change them ({why}). '
            f"To allow it, bind the ClusterRole {policy.label_admin_role} (verb {LABEL_VERB} on "
            f"{LABEL_RESOURCE}.{LABEL_GROUP}; resourceNames limit it to some namespaces), or add the "
            f"user or a group to --label-admins (chart value policy.labelAdmins; now: "
            f"{principals_text(policy.label_admins)})"
        )


def _prefixed_labels(obj: object) -> dict[str, str]:
    labels = string_map(object_field(obj, "metadata").get("labels"))
    return {k: v for k, v in labels.items() if k.startswith(PREFIX)}


# Shared -----------------------------------------------------------------------------------


def _validate(
    request: AdmissionRequest,
    check: Callable[[Mapping[str, Any]], Problems],
    checked_fields: Callable[[Mapping[str, Any]], object],
) -> Decision:
    """Run `check` on CREATE and UPDATE; on an UPDATE that leaves `checked_fields` alone, warn only."""
    obj = request.get("object")
    if request["operation"] not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        return allowed()
    found = check(obj)
    old = request.get("oldObject")
    unchanged = (
        request["operation"] == "UPDATE"
        and isinstance(old, dict)
        and checked_fields(old) == checked_fields(obj)
    )
    if found.errors and not unchanged:
        return denied("; ".join(found.errors), found.warnings)
    if found.errors:
        return allowed(
            [f"already invalid (allowed because this update does not change it): {e}" for e in found.errors]
            + found.warnings
        )
    return allowed(found.warnings)


def _quote(value: str) -> str:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return '"' + shown.replace('"', '\\"') + '"'
