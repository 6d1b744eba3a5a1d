"""`rules check` and `rules explain`: AttachmentRules offline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from webhook.cli.common import UsageError
from webhook.cluster.files import FileState, StateError, iter_manifests
from webhook.decisions.explain import explain_pod
from webhook.decisions.wording import plural
from webhook.multus.annotations import RULE_KIND
from webhook.options import parse_list
from webhook.rules import parse_rule


def run(args: argparse.Namespace) -> int:
    """`rules check` or `rules explain`, as the command line asks."""
    if args.rules_command == "check":
        return _check(args.files)
    return _explain(args)


def _check(files: Sequence[Path]) -> int:

    errors, checked = [], 0
    try:
        for where, doc in iter_manifests(files):
            if doc.get("kind") != RULE_KIND:
                continue
            checked += 1
            try:
                parse_rule(doc)
            except ValueError as err:
                errors.append(f"{where}: {err}")
    except StateError as err:
        errors.append(str(err))
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if checked == 0 and not errors:
        print(f"error: no {RULE_KIND} found in {', '.join(map(str, files))}", file=sys.stderr)
        return 1
    print(f"{plural(checked, 'rule')} checked, {len(errors)} invalid")
    return 1 if errors else 0


def _explain(args: argparse.Namespace) -> int:

    if not args.state or not args.namespace:
        raise UsageError("rules explain needs --state DIR and --namespace NS")
    labels = {}
    for item in parse_list(args.labels):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f'--labels item "{item}" is not KEY=VALUE')
        labels[key.strip()] = value.strip()
    state = FileState.from_directory(Path(args.state))
    print(explain_pod(state, args.namespace, labels, args.annotation))
    return 0
