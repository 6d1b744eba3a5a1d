"""AttachmentRules (`multihome.io/v1alpha1`): namespace labels and Pod labels to networks.

A rule selects namespaces by their labels (required) and Pods by theirs (optional,
absent = every Pod), and lists Multus NetworkSelectionElements. Rules are ordered
by priority (higher first), then by name; that order decides which rule wins when
two give the same interface or the same network.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.multus.annotations import RULE_GROUP, RULE_KIND
from webhook.multus.json_types import json_type_name, object_field
from webhook.multus.kube_names import is_dns1123_subdomain
from webhook.multus.networks import NetworkSelection, duplicate_interfaces, parse_selection_element
from webhook.multus.selectors import LabelSelector, compile_selector


@dataclass(frozen=True)
class AttachmentRule:
    """A compiled AttachmentRule. Networks without a namespace take the Pod's."""

    name: str
    namespace_selector: LabelSelector
    networks: tuple[NetworkSelection, ...]
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    priority: int = 0

    def selects(self, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
        """True when this rule applies to a Pod with these labels in a namespace with those."""
        return self.namespace_selector.matches(namespace_labels) and self.pod_selector.matches(pod_labels)

    def networks_for(self, pod_namespace: str) -> list[NetworkSelection]:
        """This rule's networks with the Pod's namespace filled in where none is given."""
        return [n if n.explicit_namespace else replace(n, namespace=pod_namespace) for n in self.networks]

    def given_networks(self, namespaces: Iterable[str]) -> list[tuple[int, NetworkSelection]]:
        """(index in spec.networks, network) for every network this rule gives in `namespaces`.

        A network with a namespace is given once; one without means "the Pod's namespace",
        so it is given in each of the namespaces the rule selects (pass those).
        """
        names = list(namespaces)
        given: list[tuple[int, NetworkSelection]] = []
        for index, network in enumerate(self.networks):
            if network.explicit_namespace:
                given.append((index, network))
            else:
                given.extend((index, replace(network, namespace=ns)) for ns in names)
        return given


def parse_rule(obj: object) -> AttachmentRule:
    """Compile an AttachmentRule manifest; ValueError names the field, the value and the fix."""
    if not isinstance(obj, dict):
        raise ValueError(f"AttachmentRule is a JSON {json_type_name(obj)}; expected an object")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if kind != RULE_KIND or not str(api_version).startswith(RULE_GROUP + "/"):
        raise ValueError(
            f"expected apiVersion {RULE_GROUP}/v1alpha1 and kind {RULE_KIND}, "
            f"got {api_version!r} and {kind!r}"
        )
    metadata = object_field(obj, "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not is_dns1123_subdomain(name):
        raise ValueError(
            f"metadata.name {name!r} is not a valid object name (DNS-1123 subdomain: lower case "
            "letters, digits, '-' and '.')"
        )
    where = f"AttachmentRule {name}"
    try:
        return _parse_spec(name, obj.get("spec"))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _parse_spec(name: str, spec: Any) -> AttachmentRule:
    if not isinstance(spec, dict):
        raise ValueError("spec is missing; a rule needs spec.namespaceSelector and spec.networks")
    if "namespaceSelector" not in spec or spec["namespaceSelector"] is None:
        raise ValueError(
            "spec.namespaceSelector is required; select namespaces by label, e.g. "
            "matchLabels: {multihome.io/profile: dataplane} ({} selects every namespace)"
        )
    namespace_selector = compile_selector(spec["namespaceSelector"], "spec.namespaceSelector")
    pod_selector = compile_selector(spec.get("podSelector"), "spec.podSelector")
    raw_networks = spec.get("networks")
    if not isinstance(raw_networks, list) or not raw_networks:
        raise ValueError(
            "spec.networks must be a non-empty list of networks, e.g. "
            "[{name: ipvlan-dp, namespace: kube-system, interface: net1}]"
        )
    networks = tuple(
        parse_selection_element(item, f"spec.networks[{i}]", "") for i, item in enumerate(raw_networks)
    )
    duplicates = duplicate_interfaces([n for n in networks if n.interface])
    if duplicates:
        raise ValueError(f'spec.networks names interface "{duplicates[0]}" more than once')
    priority = spec.get("priority", 0)
    if priority is None:
        priority = 0
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError(f"spec.priority {priority!r} is not an integer")
    return AttachmentRule(name, namespace_selector, networks, pod_selector, priority)


def rule_order(rule: AttachmentRule) -> tuple[int, str]:
    """Sort key: higher priority first, then name."""
    return (-rule.priority, rule.name)


class RuleBook:
    """Rules in precedence order, indexed by the namespace labels they require.

    Each rule is filed under one term of its namespace selector: the values of an
    `In` (or `matchLabels`) term, else the key of an `Exists` term; a rule with
    neither is a candidate for every namespace. A lookup then evaluates only the
    rules filed under the namespace's own labels, and remembers the answer for that
    label set: every Pod of a namespace asks the same question.
    """

    NAMESPACE_MEMO_SIZE = 20_000  # label sets; past it the memo starts over

    def __init__(self, rules: Iterable[AttachmentRule]) -> None:
        self.rules: tuple[AttachmentRule, ...] = tuple(sorted(rules, key=rule_order))
        self._by_label: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._by_key: dict[str, list[int]] = defaultdict(list)
        self._everywhere: list[int] = []
        self._namespace_memo: dict[frozenset[tuple[str, str]], list[AttachmentRule]] = {}
        for rank, rule in enumerate(self.rules):
            self._file(rank, rule.namespace_selector)

    def _file(self, rank: int, selector: LabelSelector) -> None:
        for requirement in selector.requirements:
            if requirement.operator == "In":
                for value in requirement.values:
                    self._by_label[(requirement.key, value)].append(rank)
                return
        for requirement in selector.requirements:
            if requirement.operator == "Exists":
                self._by_key[requirement.key].append(rank)
                return
        self._everywhere.append(rank)

    def __len__(self) -> int:
        return len(self.rules)

    def _candidates(self, namespace_labels: Mapping[str, str]) -> list[AttachmentRule]:
        ranks = set(self._everywhere)
        for item in namespace_labels.items():
            ranks.update(self._by_label.get(item, ()))
            ranks.update(self._by_key.get(item[0], ()))
        return [self.rules[rank] for rank in sorted(ranks)]

    def for_namespace(self, namespace_labels: Mapping[str, str]) -> list[AttachmentRule]:
        """Rules whose namespace selector matches, in precedence order (do not change the list)."""
        key = frozenset(namespace_labels.items())
        found = self._namespace_memo.get(key)
        if found is None:
            found = [
                r
                for r in self._candidates(namespace_labels)
                if r.namespace_selector.matches(namespace_labels)
            ]
            if len(self._namespace_memo) >= self.NAMESPACE_MEMO_SIZE:
                self._namespace_memo = {}
            self._namespace_memo[key] = found
        return found

    def for_pod(
        self, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]
    ) -> list[AttachmentRule]:
        """Rules that select a Pod with these labels in a namespace with those, in order."""
        return [r for r in self.for_namespace(namespace_labels) if r.pod_selector.matches(pod_labels)]
