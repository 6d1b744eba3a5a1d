"""LabelSelectors with the API server's semantics, AttachmentRule parsing and the rule index."""

from __future__ import annotations

import random
from typing import Any

import pytest

from webhook.multus.selectors import compile_selector
from webhook.rules import AttachmentRule, RuleBook, parse_rule

LABELS = {"multihome.io/profile": "dataplane", "tier": "gold", "empty": ""}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({}, True),
        (None, True),
        ({"matchLabels": {"tier": "gold"}}, True),
        ({"matchLabels": {"tier": "silver"}}, False),
        ({"matchLabels": {"empty": ""}}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}, False),
        ({"matchExpressions": [{"key": "absent", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "absent", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "absent", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
        ({"matchLabels": {"tier": "gold"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}, False),
    ],
)
def test_selector_semantics(selector: Any, matches: bool) -> None:
    assert compile_selector(selector, "sel").matches(LABELS) is matches


@pytest.mark.parametrize(
    ("selector", "says"),
    [
        ([], "expected a LabelSelector object"),
        ({"matchLabel": {}}, "unknown field 'matchLabel'"),
        ({"matchLabels": {"tier": 1}}, "label values are strings (quote it"),
        ({"matchLabels": {"bad key!": "x"}}, 'label key "bad key!" is invalid'),
        ({"matchLabels": {"UPPER.example.com/x": "y"}}, "prefix"),
        ({"matchLabels": {"k": "-bad"}}, 'value "-bad"'),
        (
            {"matchExpressions": [{"key": "k", "operator": "in", "values": ["a"]}]},
            '"in" is not a valid selector operator',
        ),
        (
            {"matchExpressions": [{"key": "k", "operator": "In", "values": []}]},
            "must be non-empty when operator is In",
        ),
        (
            {"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["a"]}]},
            "must be empty when operator is Exists",
        ),
        ({"matchExpressions": [{"operator": "Exists"}]}, "label key is a JSON null"),
        ({"matchExpressions": {"key": "k"}}, "expected a list"),
    ],
)
def test_invalid_selectors_are_rejected_as_the_api_server_does(selector: Any, says: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        compile_selector(selector, "spec.namespaceSelector")
    assert says in str(caught.value)
    assert str(caught.value).startswith("spec.namespaceSelector")


def _rule(name: str = "r", **spec: Any) -> dict[str, Any]:
    body = {
        "namespaceSelector": {"matchLabels": {"multihome.io/profile": "dataplane"}},
        "networks": [{"name": "dp", "namespace": "kube-system"}],
    }
    body.update(spec)
    return {
        "apiVersion": "multihome.io/v1alpha1",
        "kind": "AttachmentRule",
        "metadata": {"name": name},
        "spec": body,
    }


def test_a_rule_compiles() -> None:
    rule = parse_rule(
        _rule(
            priority=7,
            podSelector={"matchLabels": {"app": "upf"}},
            networks=[{"name": "dp", "interface": "net1"}],
        )
    )
    assert rule.priority == 7
    assert rule.networks_for("core")[0].key == ("core", "dp")
    assert rule.selects(LABELS, {"app": "upf"})
    assert not rule.selects(LABELS, {"app": "amf"})


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ({"apiVersion": "v1", "kind": "ConfigMap"}, "expected apiVersion multihome.io/v1alpha1"),
        ({**_rule(), "metadata": {"name": "Bad_Name"}}, "metadata.name 'Bad_Name'"),
        ({**_rule(), "spec": None}, "spec is missing"),
        (_rule(namespaceSelector=None), "spec.namespaceSelector is required"),
        (_rule(networks=[]), "spec.networks must be a non-empty list"),
        (_rule(networks="dp"), "spec.networks must be a non-empty list"),
        (_rule(networks=[{"namespace": "x"}]), 'spec.networks[0] has no "name"'),
        (_rule(networks=[{"name": "dp", "interface": "this-is-too-long0"}]), "interface name"),
        (
            _rule(networks=[{"name": "a", "interface": "net1"}, {"name": "b", "interface": "net1"}]),
            'interface "net1" more than once',
        ),
        (_rule(priority="high"), "spec.priority 'high' is not an integer"),
        (_rule(priority=True), "is not an integer"),
        (
            _rule(podSelector={"matchExpressions": [{"key": "a", "operator": "Gt"}]}),
            "spec.podSelector.matchExpressions[0].operator",
        ),
    ],
)
def test_invalid_rules_name_the_field(rule: Any, says: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_rule(rule)
    assert says in str(caught.value)


def test_rules_are_ordered_by_priority_then_name() -> None:
    book = RuleBook(
        [
            parse_rule(_rule("b", priority=1)),
            parse_rule(_rule("a", priority=1)),
            parse_rule(_rule("z", priority=9)),
        ]
    )
    assert [r.name for r in book.for_namespace(LABELS)] == ["z", "a", "b"]


def _random_rule(rng: random.Random, index: int) -> AttachmentRule:
    keys = ["team", "profile", "tier", "region"]
    values = ["a", "b", "c"]
    expressions = []
    for key in rng.sample(keys, rng.randint(0, 2)):
        operator = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
        term: dict[str, Any] = {"key": key, "operator": operator}
        if operator in ("In", "NotIn"):
            term["values"] = rng.sample(values, rng.randint(1, 2))
        expressions.append(term)
    selector: dict[str, Any] = {"matchExpressions": expressions}
    if rng.random() < 0.4:
        selector["matchLabels"] = {rng.choice(keys): rng.choice(values)}
    return parse_rule(_rule(f"rule-{index}", namespaceSelector=selector, priority=rng.randint(0, 3)))


def test_the_index_finds_exactly_what_a_full_scan_finds() -> None:
    rng = random.Random(7)
    rules = [_random_rule(rng, i) for i in range(300)]
    book = RuleBook(rules)
    for _ in range(300):
        labels = {
            k: rng.choice(["a", "b", "c"])
            for k in rng.sample(["team", "profile", "tier", "region", "other"], rng.randint(0, 4))
        }
        scan = sorted(
            (r for r in rules if r.namespace_selector.matches(labels)), key=lambda r: (-r.priority, r.name)
        )
        assert book.for_namespace(labels) == scan
