"""What every command shares: the usage error, one-line messages, the cluster to talk to."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from webhook.cluster.kube import Endpoint


class UsageError(Exception):
    """A command cannot run as asked; the message says why and what to do."""


def endpoint_of(args: argparse.Namespace) -> Endpoint:
    """The cluster of --kubeconfig and --context, found as kubectl finds it."""
    return Endpoint.load(Path(args.kubeconfig) if args.kubeconfig else None, args.context or None)


def say(line: str) -> None:
    """One line on stderr, the whole reason; folded if a reason spans lines."""
    print(" ".join(line.split()), file=sys.stderr)


def print_quietly(text: str) -> None:
    """Write to stdout; a reader that went away (`| head -1`) ends the output, not the command."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would flush stdout again at exit and complain: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
