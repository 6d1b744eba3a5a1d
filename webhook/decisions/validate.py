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
    PoolBounds,
    PoolBoundsCache,
    overlaps_with,
)
from webhook.decisions.checks import CHECKS
from webhook.decisions.inject import rules_for_pod
from webhook.decisions.issues import (
    address_issues,
    invalid_rule_issue,
    nad_issues,
    not_granted_issue,
    pod_issues,
    rule_issues,
)
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
from webhook.multus.annotations import DEFAULT_NETWORK, NETWORKS, PREFIX
from webhook.multus.json_types import object_field, string_map
from webhook.multus.nad import NetworkAttachment, parse_network_attachment
from webhook.rules import parse_rule

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


def denies(check: str, policy: AdmissionPolicy) -> bool:
    """Whether an issue of `check` denies at admission under `policy` (else it is a warning)."""
    switch = {
        "MH003": policy.unsupported_types == "deny",
        "MH012": policy.default_network == "deny",
        "MH014": policy.missing_networks == "deny",
        "MH017": policy.namespace_isolation == "strict",
        "MH050": policy.ip_conflicts == "deny",
        "MH052": policy.ip_conflicts == "deny",
    }
    return switch.get(check, CHECKS[check].severity == "error")


def nad_problems(
    nad: NetworkAttachment, policy: AdmissionPolicy, state: ClusterState, bounds: PoolBounds | None = None
) -> Problems:
    """Everything wrong with a NetworkAttachmentDefinition, on its own and beside the others.

    `bounds` indexes the other NADs' pools (built from the state when not given).
    """
    found = Problems()
    what = f"NetworkAttachmentDefinition {nad.ref}"
    overlaps = overlaps_with(nad, bounds if bounds is not None else PoolBounds(state.nads()))
    for issue in (*nad_issues(nad), *address_issues(nad, overlaps)):
        found.add(issue.text(what), deny=denies(issue.check, policy))
    return found


def validate_network_attachment(
    request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy
) -> Decision:
    """`POST /validate/networkattachmentdefinitions`, the other NADs' pools indexed afresh."""
    return NetworkAttachmentValidator()(request, state, policy)


class NetworkAttachmentValidator:
    """`POST /validate/networkattachmentdefinitions`, keeping the pool index while the NADs are the same."""

    def __init__(self) -> None:
        self._bounds = PoolBoundsCache()

    def __call__(self, request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy) -> Decision:
        return _validate(
            request,
            lambda obj: nad_problems(_as_nad(obj, request), policy, state, self._bounds.of(state.nads())),
            _spec_of,
        )


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
    name = metadata.get("name") or metadata.get("generateName") or "(unnamed)"
    what = f"Pod {pod_namespace}/{name}"
    judged = pod_issues(string_map(metadata.get("annotations")), pod_namespace, state)
    issues = list(judged.issues)
    granted = _granted_namespaces(pod_namespace, string_map(metadata.get("labels")), state, policy)
    if granted is not None:
        issues += [
            not_granted_issue(selection, pod_namespace, policy.global_namespaces)
            for selection in judged.selections or ()
            if selection.namespace not in granted
        ]
    for issue in issues:
        found.add(issue.text(what), deny=denies(issue.check, policy))
    return found


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
        found.add(invalid_rule_issue(str(err)).text(), deny=True)
        return found
    for issue in rule_issues(rule, state):
        found.add(issue.text(f"AttachmentRule {rule.name}"), deny=issue.check == "MH021")
    return found


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
            f"MH025 {CHECKS['MH025'].name}: Namespace {name}: metadata.labels {', '.join(changed)}: {PREFIX} labels decide which "
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
            [f"{e} (allowed: this update does not change it)" for e in found.errors] + found.warnings
        )
    return allowed(found.warnings)
