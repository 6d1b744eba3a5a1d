"""`aws iam-policy`: the IAM policy the controller's role needs, as JSON."""

from __future__ import annotations

import argparse
import json

from webhook.aws.iam import iam_policy


def run(args: argparse.Namespace) -> int:
    """Print the policy for what is enabled (`--ip-management` adds the address writes)."""
    print(json.dumps(iam_policy(ip_management=bool(args.ip_management)), indent=2))
    return 0
