"""`checks [ID]`: the check catalogue, as `ruff rule` prints a rule."""

from __future__ import annotations

import argparse

from webhook.decisions.checks import CHECKS, check


def run(args: argparse.Namespace) -> int:
    """Every check in one line each, or one check's full text."""
    if args.check_id is not None:
        print(check(args.check_id).explain())
        return 0
    width = max(len(c.name) for c in CHECKS.values())
    for c in CHECKS.values():
        print(f"{c.id}  {c.severity:<7}  {c.name:<{width}}  {c.title}")
    return 0
