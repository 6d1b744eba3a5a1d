"""Counts and lists as a person reads them: "1 policy", "2 policies", "a, b and 3 more"."""

from __future__ import annotations

from collections.abc import Sequence


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


def listed(items: Sequence[str], limit: int = 5) -> str:
    """The first `limit` items, comma-separated, and how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
