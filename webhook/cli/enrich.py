"""`enrich`: NetworkPolicies in manifest files, enriched (or un-enriched) for a state."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from policies.enrich import PodNetworks
from policies.manifests import dump_documents, enrich_file
from webhook.cli.common import UsageError
from webhook.cluster.files import FileState
from webhook.decisions.wording import plural


def run(args: argparse.Namespace) -> int:
    """`enrich` as the command line asks."""

    if not args.state and not args.remove:
        raise UsageError(
            "enrich needs --state DIR: the namespaces, NADs, rules and workloads the policies are for"
        )
    state = FileState.from_directory(Path(args.state)) if args.state else FileState([])
    changed = policies = 0
    companions, printed = [], []
    networks = PodNetworks(state)
    for path in args.files:
        result = enrich_file(path, state, remove=args.remove, companions=args.companions, networks=networks)
        changed, policies = changed + result.changed, policies + result.policies
        companions += result.companions
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.in_place and result.changed:
            path.write_text(result.text, encoding="utf-8")
        elif not args.in_place:
            printed.append(result.text if result.text.endswith("\n") else result.text + "\n")
    if companions:
        printed.append(dump_documents(companions))
    sys.stdout.write("---\n".join(printed))
    verb = "un-enriched" if args.remove else "enriched"
    print(f"{changed} of {plural(policies, 'NetworkPolicy', 'NetworkPolicies')} {verb}", file=sys.stderr)
    return 0
