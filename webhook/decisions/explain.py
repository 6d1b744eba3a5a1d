"""`rules explain`: which rules select a Pod, what it gets, and what was left out, in words."""

from __future__ import annotations

from collections.abc import Mapping

from webhook.decisions.allocation import crowded
from webhook.decisions.inject import plan_injection
from webhook.decisions.snapshot import ClusterState
from webhook.multus.annotations import IGNORE, INJECTED_BY, NETWORKS
from webhook.multus.networks import detect_form, format_network_selections, parse_network_selections
from webhook.multus.selectors import LabelSelector


def _terms(selector: LabelSelector, labels: Mapping[str, str]) -> str:
    if not selector.requirements:
        return "(empty: matches everything)"
    return ", ".join(f"{term} [{'yes' if term.matches(labels) else 'no'}]" for term in selector.requirements)


def explain_pod(
    state: ClusterState,
    namespace: str,
    pod_labels: Mapping[str, str],
    annotation: str | None = None,
) -> str:
    """A report of injection for a Pod with `pod_labels` (and its own `annotation`) in `namespace`."""
    found = state.namespace(namespace)
    namespace_labels = found.labels if found else {}
    lines = [
        f"Pod in namespace {namespace}, labels: "
        + (", ".join(f"{k}={v}" for k, v in sorted(pod_labels.items())) or "(none)"),
        f"Namespace {namespace} labels: "
        + (", ".join(f"{k}={v}" for k, v in sorted(namespace_labels.items())) or "(none)")
        + ("" if found else "  (namespace not in the state)"),
    ]
    if found is not None and found.ignored:
        lines.append(f"The namespace is labelled {IGNORE}=true: the webhooks skip it entirely.")
        return "\n".join(lines)
    book = state.rulebook()
    selected = book.for_pod(namespace_labels, pod_labels)
    lines.append("")
    lines.append(f"{len(selected)} of {len(book)} AttachmentRules select this Pod:")
    for rule in book.rules:
        verdict = "selects" if rule in selected else "does not select"
        lines.append(f"  {rule.name} (priority {rule.priority}) {verdict} it")
        lines.append(f"    namespaceSelector: {_terms(rule.namespace_selector, namespace_labels)}")
        lines.append(f"    podSelector:       {_terms(rule.pod_selector, pod_labels)}")
    existing = parse_network_selections(annotation, namespace) if annotation else []
    plan = plan_injection(existing, selected, namespace, state)
    lines.append("")
    for rule_name, network in plan.added:
        where = f"@{network.interface}" if network.interface else ""
        absent = (
            ""
            if state.nad(*network.key)
            else f"; NetworkAttachmentDefinition {network.ref} does not exist (MH022): Multus waits for it"
        )
        lines.append(f"adds {network.ref}{where}  (from {rule_name}{absent})")
    for skipped in plan.skipped:
        lines.append(f"leaves out {skipped.network.ref} from {skipped.rule}: {skipped.reason}")
    if not plan.added:
        lines.append("Nothing is injected.")
        return "\n".join(lines)
    form = detect_form(annotation) if annotation else "comma"
    lines.append("")
    lines.append(f"{NETWORKS}: {format_network_selections(plan.selections, form)}")
    lines.append(f"{INJECTED_BY}: {','.join(plan.contributors)}")
    keys = {s.key for s in plan.selections}
    full = [usage for usage in crowded(state) if usage.nad.key in keys]
    if full:
        lines.append("")
        for usage in full:
            lines.append(f"capacity of {usage.nad.ref}: {usage}")
    return "\n".join(lines)
