"""`python -m webhook`, `multihome` and `kubectl multihome`: parse, run one command, exit.

Exit codes follow kubectl's habits: 0 done, 1 findings at `--fail-on`, 2 could not run
(the reason in one line on stderr, never a traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Final

from webhook.cli.common import UsageError, say
from webhook.cli.parser import build_parser
from webhook.cluster.kube import ApiError
from webhook.telemetry.multiproc import prepare_metrics_directory

# Each command's module is imported when that command runs, and only then: `serve`
# never loads the controllers or the audit, and a command that fails to parse loads nothing.
COMMANDS: Final[Mapping[str, str]] = {
    "serve": "webhook.cli.serve",
    "controller": "webhook.cli.controller",
    "certs": "webhook.cli.certs",
    "audit": "webhook.cli.audit",
    "enrich": "webhook.cli.enrich",
    "checks": "webhook.cli.checks",
    "rules": "webhook.cli.rules",
    "aws": "webhook.cli.aws",
}


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m webhook") -> int:
    """Run a command; return the exit code: 0 done, 1 findings at --fail-on, 2 could not run.

    Whatever stops a command is said in one line on stderr, never as a traceback.
    """
    args = build_parser(prog).parse_args(argv)
    logger, level = logging.getLogger("multihome"), logging.getLogger("multihome").level
    if args.command not in ("serve", "controller"):
        # A command says what went wrong itself, in one line; the watches' retry warnings
        # (their log lines, on stderr by default) would only repeat it, many times.
        logger.setLevel(logging.ERROR)
    try:
        return _run(args)
    except (UsageError, ValueError, ApiError) as err:
        say(f"error: {err}")
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        say(f"error: {where}{err.strerror or err}")
    except KeyboardInterrupt:
        return 130
    finally:
        logger.setLevel(level)
    return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        # gunicorn's workers share /metrics through files, and prometheus_client chooses
        # them when it is imported: the directory is exported before the server is.
        prepare_metrics_directory()
    command = importlib.import_module(COMMANDS[args.command])
    status: int = command.run(args)
    return status


def console() -> None:
    """The `multihome` console script (`pip install .`)."""
    sys.exit(main(prog="multihome"))


def kubectl_plugin() -> None:
    """`kubectl-multihome`: kubectl runs it for `kubectl multihome ...` (the krew convention)."""
    sys.exit(main(prog="kubectl multihome"))
