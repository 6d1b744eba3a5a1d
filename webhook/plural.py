"""Counts as a person reads them: "1 policy", "2 policies", "0 findings"."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`count` and `noun`, the noun in the plural unless the count is one (`many` when irregular)."""
    if count == 1:
        return f"1 {noun}"
    if many is None:
        consonant_y = noun.endswith("y") and noun[-2:-1] not in tuple("aeiou")
        many = (
            noun[:-1] + "ies"
            if consonant_y
            else noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
        )
    return f"{count:,} {many}"
