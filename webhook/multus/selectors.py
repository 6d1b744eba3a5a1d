"""Kubernetes LabelSelectors, compiled once and matched with the API server's semantics.

`matchLabels` and `matchExpressions` are ANDed; operators In, NotIn, Exists and
DoesNotExist; NotIn and DoesNotExist match objects without the key; an empty
selector matches everything. Invalid selectors are rejected as the API server
rejects them (apimachinery `ValidateLabelSelector`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from webhook.multus.json_types import json_type_name
from webhook.multus.kube_names import is_dns1123_subdomain

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")
_LABEL_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


@dataclass(frozen=True)
class Requirement:
    """One term of a selector: `key operator values`."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when `labels` satisfy this term."""
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        if self.operator == "In" and len(self.values) == 1:
            return f"{self.key}={next(iter(self.values))}"
        word = "in" if self.operator == "In" else "notin"
        return f"{self.key} {word} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class LabelSelector:
    """A compiled selector: all requirements must hold."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when `labels` satisfy every requirement (always, for an empty selector)."""
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements) or "(everything)"


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or not is_dns1123_subdomain(prefix)):
        return f'prefix "{prefix}" is not a DNS-1123 subdomain'
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (
            f'name "{name}" must be 1-63 characters of letters, digits, "-", "_" or ".", '
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if value == "":
        return None
    if len(value) > 63 or not _LABEL_NAME.fullmatch(value):
        return (
            'must be at most 63 characters of letters, digits, "-", "_" or ".", '
            "starting and ending with a letter or digit"
        )
    return None


def compile_selector(selector: object, where: str) -> LabelSelector:
    """Compile a LabelSelector manifest; ValueError names the field (`where`) and the fix."""
    if selector is None:
        return LabelSelector()
    if not isinstance(selector, dict):
        raise ValueError(f"{where} is a JSON {json_type_name(selector)}; expected a LabelSelector object")
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise ValueError(
            f"{where} has unknown field {sorted(unknown)[0]!r}; a LabelSelector has only "
            "matchLabels and matchExpressions"
        )
    requirements = [
        *_match_labels(selector.get("matchLabels"), f"{where}.matchLabels"),
        *_match_expressions(selector.get("matchExpressions"), f"{where}.matchExpressions"),
    ]
    return LabelSelector(tuple(requirements))


def _match_labels(value: object, where: str) -> list[Requirement]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ValueError(f"{where} is a JSON {json_type_name(value)}; expected a map of label: value")
    requirements = []
    for key, label_value in value.items():
        _check_key(where, key)
        if not isinstance(label_value, str):
            raise ValueError(
                f'{where}["{key}"] is a JSON {json_type_name(label_value)}; label values are '
                'strings (quote it: "true", "1")'
            )
        problem = label_value_problem(label_value)
        if problem:
            raise ValueError(f'{where}["{key}"] value "{label_value}" {problem}')
        requirements.append(Requirement(key, "In", frozenset({label_value})))
    return requirements


def _match_expressions(value: object, where: str) -> list[Requirement]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where} is a JSON {json_type_name(value)}; expected a list")
    return [_expression(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _expression(item: object, where: str) -> Requirement:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is a JSON {json_type_name(item)}; expected {{key, operator, values}}")
    key, operator, values = item.get("key"), item.get("operator"), item.get("values")
    _check_key(where + ".key", key)
    assert isinstance(key, str)
    if operator not in OPERATORS:
        raise ValueError(
            f'{where}.operator "{operator}" is not a valid selector operator; use one of '
            + ", ".join(OPERATORS)
        )
    values = [] if values is None else values
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}.values must be a list of strings")
    if operator in ("In", "NotIn") and not values:
        raise ValueError(f"{where}.values must be non-empty when operator is {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise ValueError(f"{where}.values must be empty when operator is {operator}")
    for v in values:
        problem = label_value_problem(v)
        if problem:
            raise ValueError(f'{where}.values entry "{v}" {problem}')
    return Requirement(key, operator, frozenset(values))


def _check_key(where: str, key: Any) -> None:
    if not isinstance(key, str):
        raise ValueError(f"{where}: label key is a JSON {json_type_name(key)}; expected a string")
    problem = label_key_problem(key)
    if problem:
        raise ValueError(f'{where}: label key "{key}" is invalid: {problem}')
