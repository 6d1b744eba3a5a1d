"""Audit: every violation of the EKS rules for Multus, and every policy missing enrichment.

`audit(state, manifests)` is a pure function from a cluster (or a repository of
manifests) to findings. Each finding has a stable check ID, a severity, the object,
what is wrong and the fix; IDs never change meaning, so pipelines can allow-list.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from policies.enrich import PodNetworks, enrich_policy
from webhook.cluster.files import TEMPLATE_PATHS
from webhook.decisions.allocation import (
    Overlap,
    crowded,
    eni_secondary_ips,
    find_overlaps,
)
from webhook.decisions.checks import CHECKS, NO_MANAGE_TAG, SEVERITIES, Severity
from webhook.decisions.inject import plan_injection, rules_for_pod
from webhook.decisions.issues import address_issues, invalid_rule_issue, nad_issues, pod_issues, rule_issues
from webhook.decisions.snapshot import ClusterState, PodInfo
from webhook.multus.annotations import ENRICH, ENRICHMENT, INJECT, NETWORKS
from webhook.multus.json_types import object_field, string_map
from webhook.multus.nad import NetworkAttachment, master_interfaces
from webhook.multus.vpc_cni import is_vpc_cni_network
from webhook.rules import AttachmentRule


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one object."""

    check: str
    severity: Severity
    kind: str
    namespace: str
    name: str
    message: str
    fix: str
    # `file:line` of the object when it was read from a file (a GitOps check), else "".
    source: str = ""

    @property
    def object_ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checkName"] = CHECKS[self.check].name
        return data


def _finding(check: str, kind: str, namespace: str, name: str, message: str, fix: str) -> Finding:
    return Finding(check, CHECKS[check].severity, kind, namespace, name, message, fix)


def audit(
    state: ClusterState,
    manifests: Sequence[Mapping[str, Any]] = (),
    *,
    namespace: str | None = None,
    progress: Callable[[str], None] | None = None,
    more: Iterable[Finding] = (),
) -> list[Finding]:
    """Every finding in `state` (and the extra `manifests`: workloads, Multus' config), sorted."""
    steps: list[tuple[str, Callable[[], Iterable[Finding]]]] = [
        ("NetworkAttachmentDefinitions", lambda: _nads(state)),
        ("IP addresses", lambda: _addresses(state)),
        ("AttachmentRules", lambda: _rules(state)),
        ("Pods", lambda: _pods(state)),
        ("workloads", lambda: _workloads(manifests)),
        ("NetworkPolicies", lambda: _policies(state)),
        ("Multus configuration", lambda: _multus(manifests)),
    ]
    findings: list[Finding] = list(more)  # findings made elsewhere (EC2's), sorted with these
    for label, step in steps:
        if progress:
            progress(f"checking {label}")
        findings.extend(step())
    if namespace is not None:
        findings = [f for f in findings if f.namespace == namespace]
    findings = [replace(f, source=state.location(f.kind, f.namespace, f.name)) for f in findings]
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(
        set(findings), key=lambda f: (order[f.severity], f.check, f.kind, f.namespace, f.name, f.message)
    )


def _nads(state: ClusterState) -> Iterator[Finding]:
    for nad in state.nads():
        yield from _nad_findings(nad)


def _nad_findings(nad: NetworkAttachment) -> Iterator[Finding]:
    kind, ns, name = "NetworkAttachmentDefinition", nad.namespace, nad.name
    for issue in nad_issues(nad):
        yield _finding(issue.check, kind, ns, name, issue.message, issue.fix)
    for plugin_type, device in master_interfaces(nad):
        if plugin_type in ("ipvlan", "host-device"):
            yield _finding(
                "MH005",
                kind,
                ns,
                name,
                f'{plugin_type} uses interface "{device}" on each node',
                f"tag the ENI attached as {device} with {NO_MANAGE_TAG} (the cluster cannot see EC2 tags)",
            )


def _addresses(state: ClusterState) -> Iterator[Finding]:
    """The address management EKS leaves to its users (webhook/decisions/allocation.py)."""
    kind = "NetworkAttachmentDefinition"
    overlaps: dict[tuple[str, str], list[Overlap]] = defaultdict(list)
    for overlap in find_overlaps(state.nads()):
        for side in (overlap.first, overlap.second):
            overlaps[side.namespace, side.name].append(overlap)
    for nad in state.nads():
        for issue in address_issues(nad, overlaps.get((nad.namespace, nad.name), ())):
            yield _finding(issue.check, kind, nad.namespace, nad.name, issue.message, issue.fix)
        subnets = eni_secondary_ips(nad)
        if subnets:
            yield _finding(
                "MH055",
                kind,
                nad.namespace,
                nad.name,
                f"ipvlan in L2 mode on {subnets}: the VPC delivers only addresses assigned to the ENI",
                "assign the Pods' addresses to the ENI as secondary private IPs (whatever manages them must), "
                "and keep the range out of automatic assignment with a subnet CIDR reservation, so the VPC CNI "
                "never gives them to primary interfaces",
            )
    for usage in crowded(state):
        check = "MH054" if usage.pods > usage.addresses else "MH053"
        yield _finding(
            check,
            kind,
            usage.nad.namespace,
            usage.nad.name,
            str(usage),
            "widen the range, or split the Pods over more networks",
        )


def _rules(state: ClusterState) -> Iterator[Finding]:
    for invalid in state.invalid_rules():
        issue = invalid_rule_issue(invalid.error)
        yield _finding(issue.check, "AttachmentRule", "", invalid.name, issue.message, issue.fix)
    namespaces = list(state.namespaces())
    for rule in state.rulebook().rules:
        for issue in rule_issues(rule, state, namespaces):
            yield _finding(issue.check, "AttachmentRule", "", rule.name, issue.message, issue.fix)
    yield from _rule_conflicts(state, namespaces)


def _rule_conflicts(state: ClusterState, namespaces: Sequence[Any]) -> Iterator[Finding]:
    book = state.rulebook()
    seen: set[tuple[str, str, str]] = set()
    for namespace in namespaces:
        if namespace.ignored:
            continue
        owners: dict[str, AttachmentRule] = {}
        for rule in book.for_namespace(namespace.labels):
            for network in rule.networks:
                if network.interface is None:
                    continue
                winner = owners.setdefault(network.interface, rule)
                key = (winner.name, rule.name, network.interface)
                if winner is not rule and key not in seen:
                    seen.add(key)
                    yield _finding(
                        "MH024",
                        "AttachmentRule",
                        "",
                        rule.name,
                        f'gives interface "{network.interface}" that AttachmentRule {winner.name} (priority {winner.priority}) already gives in namespace {namespace.name}, so it loses there',
                        "give the network another interface name, or narrow the rules' selectors",
                    )


def _pods(state: ClusterState) -> Iterator[Finding]:
    # Every Pod, those without networks too (MH015): a live state reads them in pages.
    for pod in state.all_pods():
        yield from _pod_findings(pod, state)


def _pod_findings(pod: PodInfo, state: ClusterState) -> Iterator[Finding]:
    kind, _, owner_name = pod.owner.partition("/")
    kind, name = (kind, owner_name) if pod.owner else ("Pod", pod.name)
    ns = pod.namespace
    judged = pod_issues(pod.annotations, ns, state, at="spec.template." if pod.owner else "")
    for issue in judged.issues:
        if issue.check != "MH003":  # an unsupported type: one finding, on the NAD, not one per Pod
            yield _finding(issue.check, kind, ns, name, issue.message, issue.fix)
    if judged.selections is None:
        return
    existing = list(judged.selections)
    if not pod.owner and pod.annotations.get(INJECT) != "false":
        plan = plan_injection(existing, rules_for_pod(state, ns, pod.labels), ns, state)
        if plan.added:
            missing = ", ".join(sorted({s.ref for _, s in plan.added}))
            yield _finding(
                "MH015",
                kind,
                ns,
                name,
                f"its AttachmentRules now give {missing}, which it does not have (created before the rule, or while the webhook was down)",
                "restart the workload so its Pods are admitted again",
            )


def _workloads(manifests: Sequence[Mapping[str, Any]]) -> Iterator[Finding]:
    for obj in manifests:
        kind = str(obj.get("kind", ""))
        if kind not in TEMPLATE_PATHS:
            continue
        metadata = object_field(obj, "metadata")
        annotations = string_map(metadata.get("annotations"))
        if NETWORKS in annotations:
            yield _finding(
                "MH016",
                kind,
                str(metadata.get("namespace") or "default"),
                str(metadata.get("name") or ""),
                f"{NETWORKS} is on the {kind}'s metadata, where Multus never sees it",
                f"move it to {'.'.join(TEMPLATE_PATHS[kind])}.metadata.annotations",
            )


def _policies(state: ClusterState) -> Iterator[Finding]:
    networks = PodNetworks(state)
    for policy in state.network_policies():
        metadata = object_field(policy, "metadata")
        annotations = string_map(metadata.get("annotations"))
        if annotations.get(ENRICH) == "false":
            continue
        enriched = enrich_policy(policy, state, networks).policy
        if enriched.get("spec") == policy.get("spec") and string_map(
            object_field(enriched, "metadata").get("annotations")
        ).get(ENRICHMENT) == annotations.get(ENRICHMENT):
            continue
        ns, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")
        if ENRICHMENT in annotations:
            yield _finding(
                "MH031",
                "NetworkPolicy",
                ns,
                name,
                "its enrichment no longer matches the secondary networks of the Pods it covers",
                "let the reconciler run, or: multihome enrich -i FILE --state DIR",
            )
        else:
            yield _finding(
                "MH030",
                "NetworkPolicy",
                ns,
                name,
                "it selects, or admits as peers, multi-homed Pods but has none of their secondary CIDRs or ports, so traffic on the secondary interfaces is not governed",
                "multihome enrich -i FILE --state DIR, or let the webhook enrich it on the next apply",
            )


MULTUS_TYPES: Final = frozenset({"multus", "multus-shim"})


def _multus(manifests: Sequence[Mapping[str, Any]]) -> Iterator[Finding]:
    for obj in manifests:
        kind = obj.get("kind")
        metadata = object_field(obj, "metadata")
        ns, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")
        if kind == "ConfigMap":
            for key, text in string_map(obj.get("data")).items():
                default = _multus_default(text)
                if default is not None and not is_vpc_cni_network(default):
                    yield _finding(
                        "MH040",
                        "ConfigMap",
                        ns,
                        name,
                        f'data["{key}"] makes "{default}" Multus\' default network',
                        "set clusterNetwork (or the first delegate) to the VPC CNI: aws-cni",
                    )
        elif kind == "DaemonSet" and "multus" in name:
            for arg in _container_args(obj):
                if arg.startswith("--cluster-network="):
                    default = arg.partition("=")[2]
                    if not is_vpc_cni_network(default):
                        yield _finding(
                            "MH040",
                            "DaemonSet",
                            ns,
                            name,
                            f'container argument "{arg}" makes "{default}" Multus\' default network',
                            "use --cluster-network=aws-cni, or leave Multus to find the VPC CNI's config",
                        )


def _multus_default(text: str) -> str | None:
    """The default network a Multus config names, or None when `text` is not a Multus config."""
    try:
        config = json.loads(text)
    except ValueError:
        return None
    if not isinstance(config, dict) or (
        config.get("type") not in MULTUS_TYPES and "clusterNetwork" not in config
    ):
        return None
    if isinstance(config.get("clusterNetwork"), str) and config["clusterNetwork"]:
        return str(config["clusterNetwork"])
    delegates = config.get("delegates")
    if isinstance(delegates, list) and delegates and isinstance(delegates[0], dict):
        first = delegates[0]
        plugins = first.get("plugins")
        if isinstance(plugins, list) and plugins and isinstance(plugins[0], dict):
            return str(plugins[0].get("type", ""))
        return str(first.get("type", ""))
    return None


def _container_args(obj: Mapping[str, Any]) -> list[str]:
    spec = object_field(object_field(object_field(obj, "spec"), "template"), "spec")
    args: list[str] = []
    containers = spec.get("containers")
    for container in containers if isinstance(containers, list) else []:
        if isinstance(container, dict):
            for key in ("command", "args"):
                values = container.get(key)
                args += [str(a) for a in values] if isinstance(values, list) else []
    return args


def summarize(findings: Sequence[Finding]) -> dict[str, int]:
    """Counts by severity."""
    return {severity: sum(1 for f in findings if f.severity == severity) for severity in SEVERITIES}


def exit_code(findings: Sequence[Finding], fail_on: Severity | None) -> int:
    """1 when a finding is at least as severe as `fail_on`, else 0."""
    if fail_on is None:
        return 0
    threshold = SEVERITIES.index(fail_on)
    return 1 if any(SEVERITIES.index(f.severity) <= threshold for f in findings) else 0


def audit_gauges(findings: Sequence[Finding]) -> dict[tuple[str, str], int]:
    """Findings by (check, severity), with a zero for every check that found nothing."""
    counts: dict[tuple[str, str], int] = {(c.id, c.severity): 0 for c in CHECKS.values()}
    for finding in findings:
        counts[(finding.check, finding.severity)] += 1
    return counts
