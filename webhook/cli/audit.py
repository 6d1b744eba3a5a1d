"""`audit`: every finding, from files, a stream or the live cluster, in the format asked."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from policies.audit import Finding, audit, exit_code
from policies.aws import OnEc2, aws_findings
from policies.controllers.policy_reports import REPORT_APIS, policy_reports
from policies.report import RENDERERS, render_text
from webhook.aws.ec2 import Ec2Reader, Ec2Unavailable, ec2_client
from webhook.cli.common import UsageError, endpoint_of, print_quietly, say
from webhook.cluster.files import FileState
from webhook.cluster.kube import ApiError, HttpKubeApi
from webhook.cluster.live import LiveState
from webhook.decisions.snapshot import ClusterState
from webhook.decisions.wording import plural

# What the audit reads of a live cluster beyond the watched state, once.
AUDIT_LISTS: Final = (
    "/apis/apps/v1/deployments",
    "/apis/apps/v1/statefulsets",
    "/apis/apps/v1/daemonsets",
    "/apis/batch/v1/jobs",
    "/apis/batch/v1/cronjobs",
    "/api/v1/namespaces/kube-system/configmaps",
)


# How long a command waits for the cluster's lists before it says what it is waiting for and stops.
SYNC_DEADLINE: Final = 30.0


def run(args: argparse.Namespace) -> int:
    """`audit` as the command line asks."""

    def progress(message: str) -> None:
        if sys.stderr.isatty():
            print(f"\r\033[K{message}...", end="", file=sys.stderr, flush=True)

    state, manifests, source, api = _audit_input(args, progress)
    on_aws, not_read = _aws_findings(state, api, progress) if args.aws else ([], "")
    findings = audit(state, manifests, namespace=args.namespace, progress=progress, more=on_aws)
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    to_terminal = args.output is None and sys.stdout.isatty()
    if args.format == "policyreport":
        text = _policy_report_text(findings, args.report_api)
    elif args.format == "text":
        text = render_text(findings, source, colour=to_terminal)
    else:
        text = RENDERERS[args.format](findings, source)
    if args.output is not None:
        _write_report(args.output, text)
        print(f"wrote {args.output}: {plural(len(findings), 'finding')}", file=sys.stderr)
    else:
        print_quietly(text)
    if not_read:
        say(f"error: --aws: {not_read}; every other check ran, no MH06x check did")
        return 2
    return exit_code(findings, args.fail_on)


def _aws_findings(
    state: ClusterState, api: HttpKubeApi | None, progress: Callable[[str], None]
) -> tuple[list[Finding], str]:
    """The MH06x findings, or none and what could not be read (in one line)."""
    progress("reading EC2")
    try:
        if api is not None:
            cluster = OnEc2.from_api(api)
        elif isinstance(state, FileState):
            cluster = OnEc2.from_files(state)
        else:
            return [], "no Nodes and Pods to read: neither files nor an API server"
        facts = Ec2Reader(ec2_client()).facts(cluster.nodes.values())
    except Ec2Unavailable as err:
        return [], str(err)
    except ApiError as err:
        return [], f"cannot list Nodes and Pods: {err}"
    return aws_findings(state, cluster.nodes, cluster.pods, facts), ""


def _write_report(path: Path, text: str) -> None:
    if path.is_dir():
        raise UsageError(f"--output {path} is a directory; name a file in it, e.g. {path / 'audit.html'}")
    if not path.parent.is_dir():
        raise UsageError(f"--output {path}: the folder {path.parent} does not exist")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--output {path}: cannot write it ({err.strerror})") from None


def _policy_report_text(findings: Sequence[Finding], api_version: str) -> str:

    (report_api,) = [api for api in REPORT_APIS if api.api_version == api_version]
    return yaml.safe_dump_all(policy_reports(findings, report_api, dt.datetime.now(dt.UTC)), sort_keys=False)


def _audit_input(
    args: argparse.Namespace, progress: Callable[[str], None]
) -> tuple[ClusterState, list[Mapping[str, Any]], str, HttpKubeApi | None]:
    """The state, the workloads and ConfigMaps, where they came from, and the API server if any."""
    if args.state == "-":
        state = FileState.from_stream(sys.stdin.read())
        return state, list(state.manifests()), "<stdin>", None
    if args.state:
        state = FileState.from_directory(Path(args.state), strict=False)
        for line in state.skipped:
            say(f"warning: {line}")
        return state, list(state.manifests()), str(args.state), None

    api = HttpKubeApi(endpoint_of(args))
    _reach(api)
    live = LiveState(api, watch_timeout=60).start()
    try:
        _wait_for_sync(live, api.host, progress)
    except UsageError:
        live.stop(timeout=0.5)
        raise
    manifests: list[Mapping[str, Any]] = []
    for path in AUDIT_LISTS:
        progress(f"reading {path}")
        try:
            manifests += api.list(path)[0]
        except ApiError as err:
            if err.status in (401, 403):
                print(f"warning: cannot list {path} ({err}); checks on it are skipped", file=sys.stderr)
            elif err.status != 404:
                raise ValueError(f"cannot list {path}: {err}") from None
    live.stop(timeout=0.5)
    return live, manifests, api.host, api


def _reach(api: HttpKubeApi) -> None:
    """Fail at once, in one line, when the API server cannot be reached or refuses the credentials."""
    try:
        api.get("/version", timeout=10)
    except ApiError as err:
        if err.status == 0:
            raise UsageError(
                f"cannot reach the API server at {api.host}: {str(err).partition(': ')[2]}"
            ) from None
        if err.status == 401:
            raise UsageError(
                f"the API server at {api.host} refused the credentials (401 Unauthorized)"
            ) from None
        raise UsageError(f"the API server at {api.host} answered {err}") from None


def _wait_for_sync(live: LiveState, host: str, progress: Callable[[str], None]) -> None:
    """Until every watched resource is listed; a refusal or SYNC_DEADLINE is a UsageError naming it."""
    deadline = time.monotonic() + SYNC_DEADLINE
    while not live.ready():
        sources = live.sources()
        for source in sources:
            if source.error_status in (401, 403):
                raise UsageError(
                    f"may not list {source.resource} on {host}: {source.error.partition(': ')[2]}"
                )
        if time.monotonic() > deadline:
            waiting = [f"{s.resource} ({s.error or 'no answer'})" for s in sources if not s.synced]
            raise UsageError(
                f"the API server at {host} did not list {', '.join(waiting)} within {SYNC_DEADLINE:.0f} s"
            )
        progress("reading the cluster: " + ", ".join(f"{k} {v:,}" for k, v in live.counts().items()))
        time.sleep(0.2)
