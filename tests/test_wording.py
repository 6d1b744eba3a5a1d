"""Counts and lists as a person reads them."""

from __future__ import annotations

import pytest

from webhook.decisions.wording import listed, plural


@pytest.mark.parametrize(
    ("count", "noun", "many", "says"),
    [
        (1, "policy", None, "1 policy"),
        (2, "policy", None, "2 policies"),
        (0, "finding", None, "0 findings"),
        (1, "address", None, "1 address"),
        (3, "address", None, "3 addresses"),
        (2, "day", None, "2 days"),
        (2, "NetworkPolicy", "NetworkPolicies", "2 NetworkPolicies"),
        (15000, "Pod", None, "15,000 Pods"),
    ],
)
def test_plural(count: int, noun: str, many: str | None, says: str) -> None:
    assert plural(count, noun, many) == says


def test_listed() -> None:
    assert listed(["a", "b"]) == "a, b"
    assert listed([str(i) for i in range(8)], limit=3) == "0, 1, 2 and 5 more"
