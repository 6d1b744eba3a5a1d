"""`python -m webhook`: serve, certs, rules check, rules explain.

Every flag has an environment default, `MULTIHOME_` and the flag's name in upper
case with `_` for `-` (`--tls-cert` is `MULTIHOME_TLS_CERT`). Settings are read
and checked once, before anything starts; a bad value stops the command with a
message naming the setting and the expected form.
"""

from __future__ import annotations

import argparse
import base64
import gc
import logging.config
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policies.controllers.settings import DEFAULT_CONTROLLER_BIND, ControllerSettings
from webhook import __version__
from webhook.cluster.authorizer import SubjectAccessReviewer
from webhook.cluster.kube import ApiError, Endpoint, HttpKubeApi
from webhook.decisions.checks import CHECKS, check
from webhook.decisions.label_rights import Authorizer
from webhook.decisions.policy import AdmissionPolicy, Principal
from webhook.decisions.wording import plural
from webhook.multus.annotations import NETWORKS, RULE_KIND
from webhook.options import parse_list
from webhook.server.settings import DEFAULT_BIND, DEFAULT_MAX_BODY_BYTES, ServeSettings
from webhook.telemetry.logs import lean_records, logging_config
from webhook.telemetry.multiproc import prepare_metrics_directory

if TYPE_CHECKING:
    from certs.issue import CertificateRequest
    from webhook.cluster.live import LiveState
    from webhook.decisions.snapshot import ClusterState
    from webhook.server.app import Handler

ENV_PREFIX = "MULTIHOME_"
# What the audit reads of a live cluster beyond the watched state, once.
AUDIT_LISTS = (
    "/apis/apps/v1/deployments",
    "/apis/apps/v1/statefulsets",
    "/apis/apps/v1/daemonsets",
    "/apis/batch/v1/jobs",
    "/apis/batch/v1/cronjobs",
    "/api/v1/namespaces/kube-system/configmaps",
)


# How long a command waits for the cluster's lists before it says what it is waiting for and stops.
SYNC_DEADLINE = 30.0


class UsageError(Exception):
    """A command cannot run as asked; the message says why and what to do."""


def _env(flag: str, default: Any = None) -> Any:
    return os.environ.get(ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper(), default)


def _flag(parser: argparse.ArgumentParser, flag: str, help_text: str, **kwargs: Any) -> None:
    """Add `flag` with its MULTIHOME_ environment variable as the default."""
    default = kwargs.pop("default", None)
    env_name = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    shown = f" (env {env_name}; default {default})" if default is not None else f" (env {env_name})"
    parser.add_argument(flag, default=_env(flag, default), help=help_text + shown, **kwargs)


def build_parser(prog: str = "python -m webhook") -> argparse.ArgumentParser:
    """The command line of DESIGN.md."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="multihome: admission webhook and NetworkPolicy enricher for Multus on EKS",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    _add_serve(commands)
    _add_controller(commands)
    _add_offline_commands(commands)
    return parser


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    """How a command finds its cluster: as kubectl does."""
    _flag(parser, "--kubeconfig", "kubeconfig file (else $KUBECONFIG, else ~/.kube/config, else in-cluster)")
    _flag(parser, "--context", "the kubeconfig context to use (else its current-context)")


def _endpoint(args: argparse.Namespace) -> Endpoint:
    """The cluster of --kubeconfig and --context, found as kubectl finds it."""
    return Endpoint.load(Path(args.kubeconfig) if args.kubeconfig else None, args.context or None)


def _add_serve(commands: Any) -> None:
    """`serve` and its policy settings."""
    serve = commands.add_parser("serve", help="run the HTTPS admission webhook")
    _flag(serve, "--bind", "HOST:PORT to listen on", default=DEFAULT_BIND)
    _flag(serve, "--tls-cert", "serving certificate (PEM)")
    _flag(serve, "--tls-key", "serving key (PEM)")
    _flag(serve, "--state", "directory of YAML manifests to serve as the cluster state")
    _cluster_flags(serve)
    _flag(serve, "--workers", "gunicorn worker processes, each with its own watch caches", default="1")
    _flag(serve, "--threads", "threads per worker", default="4")
    _flag(
        serve,
        "--max-body-bytes",
        "largest request body accepted",
        default=str(DEFAULT_MAX_BODY_BYTES),
    )
    _flag(
        serve,
        "--default-network",
        "deny|warn Pods that set the default-network annotation",
        default="deny",
    )
    _flag(serve, "--unsupported-types", "warn|deny CNI types EKS does not support", default="warn")
    _flag(serve, "--namespace-isolation", "warn|strict|off cross-namespace references", default="warn")
    _flag(
        serve,
        "--global-namespaces",
        "namespaces whose NADs every Pod may use",
        default="kube-system",
    )
    _flag(serve, "--missing-networks", "warn|deny references to missing NADs", default="warn")
    _flag(
        serve,
        "--ip-conflicts",
        "warn|deny NADs whose addresses overlap another's or include VPC-reserved ones",
        default="warn",
    )
    _flag(
        serve,
        "--label-admins",
        "users and groups (user:NAME, group:NAME) who may change multihome.io/ namespace labels "
        "besides those the API server's authorizer allows verb label (SubjectAccessReview)",
        default="",
    )
    _flag(
        serve,
        "--label-admin-role",
        "the ClusterRole granting verb label on namespaces.multihome.io, named in denials",
        default="multihome-label-admin",
    )
    _flag(serve, "--log-level", "debug|info|warning|error", default="info")


def _add_controller(commands: Any) -> None:
    """`controller`: the background process."""
    controller = commands.add_parser(
        "controller",
        help="run the background work: reconciler, reports, rule status, Events, certificates",
        description=(
            "Everything multihome does in the background, apart from admission: the reconciler and "
            "its companion MultiNetworkPolicies, the periodic audit (gauges, policy reports), "
            "AttachmentRule status and Events, certificate renewal and caBundle sync. Run as many "
            "replicas as you like: one is active at a time, the holder of the Lease "
            "(--lease-namespace/--lease-name); the others wait to take over. Serves /healthz, "
            "/readyz and /metrics over HTTP on --bind."
        ),
    )
    _flag(
        controller, "--bind", "HOST:PORT for /healthz, /readyz and /metrics", default=DEFAULT_CONTROLLER_BIND
    )
    _cluster_flags(controller)
    _flag(controller, "--log-level", "debug|info|warning|error", default="info")
    _flag(
        controller,
        "--reconcile",
        "on|off: re-enrich existing policies and keep their companions",
        default="on",
    )
    controller.add_argument(
        "--dry-run",
        action="store_true",
        default=_env("--dry-run", "") == "true",
        help="log what the reconciler would patch, and write no reports (env MULTIHOME_DRY_RUN=true)",
    )
    _flag(
        controller,
        "--lease-namespace",
        "namespace of the Lease",
        default=os.environ.get("POD_NAMESPACE", "multihome"),
    )
    _flag(controller, "--lease-name", "name of the Lease", default="multihome-reconciler")
    _flag(
        controller,
        "--cert-secret",
        "NAMESPACE/NAME of the self-managed certificate Secret to renew",
        default="",
    )
    _flag(controller, "--cert-service", "the Service the certificate is for", default="multihome")
    _flag(
        controller,
        "--webhook-configuration",
        "webhook configurations whose caBundle to keep in sync",
        default="",
    )
    _flag(controller, "--audit-interval", "seconds between audits (gauges, policy reports)", default="60")


def controller_settings_from(args: argparse.Namespace) -> ControllerSettings:
    """ControllerSettings from parsed `controller` flags; ValueError names the bad flag."""
    try:
        interval = float(args.audit_interval)
    except ValueError:
        raise ValueError(f'--audit-interval "{args.audit_interval}" is not a number of seconds') from None
    return ControllerSettings(
        bind=args.bind,
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        kube_context=args.context or "",
        log_level=args.log_level,
        reconcile=_on_off("reconcile", args.reconcile),
        dry_run=bool(args.dry_run),
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        cert_secret=args.cert_secret,
        cert_service=args.cert_service,
        webhook_configuration=args.webhook_configuration,
        audit_interval=interval,
    )


def _add_offline_commands(commands: Any) -> None:
    """`certs`, `audit`, `enrich` and `rules`."""
    certs = commands.add_parser("certs", help="issue the CA and the serving certificate")
    _flag(certs, "--service", "the webhook's Service name", default="multihome")
    _flag(certs, "--namespace", "the Service's namespace", default="multihome")
    _flag(certs, "--out", "directory to write ca.crt, tls.crt and tls.key to", default="certs-out")
    certs.add_argument("--dns", action="append", default=[], help="extra DNS name (repeatable)")
    certs.add_argument("--ip", action="append", default=[], help="extra IP address (repeatable)")
    certs.add_argument("--force", action="store_true", help="re-issue even if still valid")
    _flag(certs, "--secret", "NAMESPACE/NAME: keep the pair in this Secret (in a cluster) instead of --out")
    certs.add_argument(
        "--patch-webhooks",
        action="store_true",
        help="also write the CA into the webhook configurations' caBundle",
    )
    _flag(
        certs,
        "--webhook-configuration",
        "name of the Mutating and Validating webhook configurations (default: --service)",
    )
    _cluster_flags(certs)

    audit = commands.add_parser("audit", help="report every violation and every unenriched policy")
    _flag(audit, "--state", "directory of YAML manifests, or - for a YAML stream on stdin (else the cluster)")
    _cluster_flags(audit)
    audit.add_argument(
        "--format",
        choices=("text", "json", "markdown", "html", "policyreport"),
        default=_env("--format", "text"),
        help="policyreport: the report objects the leader keeps in a cluster, as YAML",
    )
    audit.add_argument(
        "--report-api",
        choices=("openreports.io/v1alpha1", "wgpolicyk8s.io/v1alpha2"),
        default=_env("--report-api", "openreports.io/v1alpha1"),
        help="with --format policyreport: Report/ClusterReport or PolicyReport/ClusterPolicyReport",
    )
    audit.add_argument("--output", type=Path, help="write the report here instead of stdout")
    audit.add_argument(
        "--fail-on",
        choices=("error", "warning", "info"),
        default=_env("--fail-on"),
        help="exit 1 when a finding is at least this severe",
    )
    audit.add_argument("-n", "--namespace", default=None, help="only findings in this namespace")

    enrich = commands.add_parser("enrich", help="enrich the NetworkPolicies in manifest files")
    enrich.add_argument("files", nargs="+", type=Path)
    _flag(enrich, "--state", "directory of YAML manifests: the cluster the policies are for")
    enrich.add_argument("-i", "--in-place", action="store_true", help="rewrite the files, keeping comments")
    enrich.add_argument("--remove", action="store_true", help="undo: remove what enrichment added")
    enrich.add_argument("--companions", action="store_true", help="also print the MultiNetworkPolicies")

    checks = commands.add_parser(
        "checks", help="the check catalogue: every ID, or one check's meaning, why and fix (like `ruff rule`)"
    )
    checks.add_argument("check_id", nargs="?", metavar="ID", help="a check ID, e.g. MH011")

    rules = commands.add_parser("rules", help="check and explain AttachmentRules")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True)
    check = rule_commands.add_parser("check", help="validate AttachmentRule files offline")
    check.add_argument("files", nargs="+", type=Path)
    explain = rule_commands.add_parser("explain", help="which rules select a Pod, and why")
    _flag(explain, "--state", "directory of YAML manifests")
    _flag(explain, "--namespace", "the Pod's namespace")
    explain.add_argument("--labels", default="", help="the Pod's labels, k=v,k=v")
    explain.add_argument("--annotation", default=None, help=f"the Pod's own {NETWORKS} value")


def settings_from(args: argparse.Namespace) -> ServeSettings:
    """ServeSettings from parsed `serve` flags; ValueError names the bad flag."""

    def number(flag: str, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f'--{flag} "{value}" is not a whole number') from None

    policy = AdmissionPolicy(
        default_network=args.default_network,
        unsupported_types=args.unsupported_types,
        namespace_isolation=args.namespace_isolation,
        global_namespaces=frozenset(parse_list(args.global_namespaces)),
        missing_networks=args.missing_networks,
        ip_conflicts=args.ip_conflicts,
        label_admins=tuple(Principal.parse(p) for p in parse_list(args.label_admins)),
        label_admin_role=args.label_admin_role,
    )
    return ServeSettings(
        bind=args.bind,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        state_dir=Path(args.state) if args.state else None,
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        kube_context=args.context or "",
        workers=number("workers", args.workers),
        threads=number("threads", args.threads),
        max_body_bytes=number("max-body-bytes", args.max_body_bytes),
        log_level=args.log_level,
        policy=policy,
    )


def _on_off(flag: str, value: str) -> bool:
    if value not in ("on", "off"):
        raise ValueError(f'--{flag} "{value}" is not one of: on, off')
    return value == "on"


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
        _say(f"error: {err}")
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        _say(f"error: {where}{err.strerror or err}")
    except KeyboardInterrupt:
        return 130
    finally:
        logger.setLevel(level)
    return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "controller":
        return _controller(args)
    if args.command == "certs":
        return _certs(args)
    if args.command == "enrich":
        return _enrich(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "checks":
        return _checks(args.check_id)
    if args.rules_command == "check":
        return _rules_check(args.files)
    return _rules_explain(args)


def _checks(check_id: str | None) -> int:
    if check_id is not None:
        print(check(check_id).explain())
        return 0
    width = max(len(c.name) for c in CHECKS.values())
    for c in CHECKS.values():
        print(f"{c.id}  {c.severity:<7}  {c.name:<{width}}  {c.title}")
    return 0


def _say(line: str) -> None:
    """One line on stderr, the whole reason; folded if a reason spans lines."""
    print(" ".join(line.split()), file=sys.stderr)


def console() -> None:
    """The `multihome` console script (`pip install .`)."""
    sys.exit(main(prog="multihome"))


def kubectl_plugin() -> None:
    """`kubectl-multihome`: kubectl runs it for `kubectl multihome ...` (the krew convention)."""
    sys.exit(main(prog="kubectl multihome"))


def _serve(args: argparse.Namespace) -> int:
    return serve(settings_from(args))


def serve(settings: ServeSettings, routes: Callable[[], Mapping[str, Handler]] | None = None) -> int:
    """`serve`: the webhook of `settings` until it is stopped.

    `routes` builds other routes than DESIGN.md's (the benchmarks' diagnostics); it is
    called once metrics are set up, since what it imports may import prometheus_client.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        raise UsageError(
            "--tls-cert and --tls-key are required: the webhook serves HTTPS only "
            "(issue a pair with: multihome certs --out DIR)"
        )
    logging.config.dictConfig(logging_config(settings.log_level))
    lean_records()
    prepare_metrics_directory()  # before anything imports prometheus_client
    from webhook.server.app import create_app  # noqa: PLC0415
    from webhook.server.gunicorn import WebhookServer  # noqa: PLC0415

    state, start, authorizer = _state_for(settings)
    app = create_app(settings, state, routes=routes() if routes is not None else None, authorizer=authorizer)
    logging.getLogger("multihome.server").info(
        "serving", extra={"bind": settings.bind, "state": str(settings.state_dir), **state.counts()}
    )
    _wait_for_certificate(settings.tls_cert, settings.tls_key)
    # What the master built (a file state, the app, every module) is shared with the
    # workers copy-on-write: frozen, the collector neither walks it in each worker nor
    # writes to its pages, which would copy them into every worker.
    gc.freeze()
    # Each worker watches the API server itself, after the fork: threads do not survive one.
    WebhookServer(settings, lambda: app, on_worker_start=start).run()
    return 0


def _wait_for_certificate(
    cert: Path, key: Path, *, timeout: float | None = None, every: float = 10.0
) -> None:
    """Wait for the serving pair a Secret volume fills in later; a path that cannot fill, fail at once.

    A kubelet mounts the certificate Secret before the Secret has its keys (the chart renders
    it empty for the init container to fill, cert-manager issues after the Pod starts) and
    writes the files on its next sync, up to a minute or two later. That is worth waiting
    for, saying so every `every` seconds; the startup probe bounds the wait. A file missing
    from a directory that is no volume (a mistyped `--tls-cert`) will never appear.
    """
    log = logging.getLogger("multihome.server")
    deadline = None if timeout is None else time.monotonic() + timeout
    said = -every
    while missing := [p for p in (cert, key) if not _has_content(p)]:
        for path in missing:
            if not _may_fill_later(path.parent):
                present = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
                there = (
                    f"{path.parent} holds {', '.join(present)}"
                    if present
                    else f"{path.parent} does not exist"
                )
                flag = "--tls-cert" if path == cert else "--tls-key"
                raise UsageError(f"{flag} {path} does not exist ({there})")
        if time.monotonic() - said >= every:
            log.warning(
                "waiting for the certificate files to appear in their volume",
                extra={"missing": [str(p) for p in missing], "cert": str(cert), "key": str(key)},
            )
            said = time.monotonic()
        if deadline is not None and time.monotonic() > deadline:
            raise UsageError(
                f"{' and '.join(map(str, missing))} did not appear within {timeout:.0f} s; "
                "issue a pair with: multihome certs --out DIR"
            )
        time.sleep(0.5)


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _may_fill_later(directory: Path, settled: float = 5.0) -> bool:
    """Whether files may still appear in `directory`.

    A Kubernetes volume (the kubelet's `..data` link) or an empty mount point fills in
    later, and so may a folder written to in the last `settled` seconds (a pair being
    written); a folder of files that has not changed since holds what it will hold.
    """
    try:
        entries = list(directory.iterdir())
        if not entries or (directory / "..data").exists():
            return True
        newest = max(entry.stat().st_mtime for entry in entries)
    except OSError:
        return False
    return time.time() - newest < settled


def _state_for(
    settings: ServeSettings,
) -> tuple[ClusterState, Callable[[], object] | None, Authorizer | None]:
    """File state from --state, else live state (and its authorizer) from the cluster kubectl would use.

    Admission watches what decisions read and nothing else: no NetworkPolicies (the
    controller's), no Lease, no writes.
    """
    from webhook.cluster.files import FileState  # noqa: PLC0415

    if settings.state_dir is not None:
        return FileState.from_directory(settings.state_dir), None, None
    from webhook.cluster.live import LiveState  # noqa: PLC0415

    endpoint = Endpoint.load(settings.kubeconfig, settings.kube_context or None)
    live = LiveState(HttpKubeApi(endpoint), network_policies=False)
    # Inside the API server's 3 s admission timeout, with room for the rest of the review.
    authorizer = SubjectAccessReviewer(HttpKubeApi(endpoint, connect_timeout=1.0, read_timeout=1.5))
    return live, live.start, authorizer


def _controller(args: argparse.Namespace) -> int:
    from policies.controllers.manager import run_controller  # noqa: PLC0415 - serve and the CLI never load it
    from webhook.cluster.live import LiveState  # noqa: PLC0415

    settings = controller_settings_from(args)
    logging.config.dictConfig(logging_config(settings.log_level))
    lean_records()
    api = HttpKubeApi(Endpoint.load(settings.kubeconfig, settings.kube_context or None))
    return run_controller(settings, api, LiveState(api))


def _certs(args: argparse.Namespace) -> int:
    from certs.issue import CertificateRequest, ensure_certificates  # noqa: PLC0415

    request = CertificateRequest(args.service, args.namespace, tuple(args.dns), tuple(args.ip))
    configuration = (args.webhook_configuration or args.service) if args.patch_webhooks else None
    if args.secret:
        return _certs_in_secret(args, request, configuration)
    out = Path(args.out)
    result = ensure_certificates(out, request, force=args.force)
    if configuration:
        from certs.sync import patch_ca_bundles  # noqa: PLC0415

        api = HttpKubeApi(_endpoint(args))
        bundle = base64.b64encode((out / "ca.crt").read_bytes()).decode()
        print(
            f"caBundle written to {plural(patch_ca_bundles(api, configuration, bundle), 'webhook')} of {configuration}"
        )
    verb = "issued" if result.issued else "kept"
    print(
        f"{verb} {out / 'tls.crt'} ({result.reason}); valid until {result.not_after:%Y-%m-%d}; "
        f"CA {out / 'ca.crt'} {'created' if result.ca_created else 'reused'}"
    )
    return 0


def _certs_in_secret(args: argparse.Namespace, request: CertificateRequest, configuration: str | None) -> int:
    from certs.sync import sync_certificates  # noqa: PLC0415

    namespace, slash, name = str(args.secret).partition("/")
    if not slash or not namespace or not name:
        raise UsageError(f'--secret "{args.secret}" is not NAMESPACE/NAME')
    api = HttpKubeApi(_endpoint(args))
    result = sync_certificates(api, request, namespace, name, configuration)
    verb = "issued" if result.certificate.issued else "kept"
    print(
        f"{verb} the pair in Secret {args.secret} ({result.certificate.reason}), valid until "
        f"{result.certificate.not_after:%Y-%m-%d}; secret {'written' if result.secret_written else 'unchanged'}; "
        f"{plural(result.webhooks_patched, 'caBundle')} updated"
    )
    return 0


def _audit(args: argparse.Namespace) -> int:
    from policies.audit import audit, exit_code  # noqa: PLC0415
    from policies.report import RENDERERS, render_text  # noqa: PLC0415

    def progress(message: str) -> None:
        if sys.stderr.isatty():
            print(f"\r\033[K{message}...", end="", file=sys.stderr, flush=True)

    state, manifests, source = _audit_input(args, progress)
    findings = audit(state, manifests, namespace=args.namespace, progress=progress)
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
        _print_quietly(text)
    return exit_code(findings, args.fail_on)


def _write_report(path: Path, text: str) -> None:
    if path.is_dir():
        raise UsageError(f"--output {path} is a directory; name a file in it, e.g. {path / 'audit.html'}")
    if not path.parent.is_dir():
        raise UsageError(f"--output {path}: the folder {path.parent} does not exist")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--output {path}: cannot write it ({err.strerror})") from None


def _print_quietly(text: str) -> None:
    """Write to stdout; a reader that went away (`| head -1`) ends the output, not the command."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would flush stdout again at exit and complain: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _policy_report_text(findings: Sequence[Any], api_version: str) -> str:
    import datetime as dt  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    from policies.controllers.policy_reports import REPORT_APIS, policy_reports  # noqa: PLC0415

    (report_api,) = [api for api in REPORT_APIS if api.api_version == api_version]
    return yaml.safe_dump_all(policy_reports(findings, report_api, dt.datetime.now(dt.UTC)), sort_keys=False)


def _audit_input(
    args: argparse.Namespace, progress: Callable[[str], None]
) -> tuple[ClusterState, list[Mapping[str, Any]], str]:
    from webhook.cluster.files import FileState  # noqa: PLC0415

    if args.state == "-":
        state = FileState.from_stream(sys.stdin.read())
        return state, list(state.manifests()), "<stdin>"
    if args.state:
        state = FileState.from_directory(Path(args.state), strict=False)
        for line in state.skipped:
            _say(f"warning: {line}")
        return state, list(state.manifests()), str(args.state)
    from webhook.cluster.live import LiveState  # noqa: PLC0415

    api = HttpKubeApi(_endpoint(args))
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
    return live, manifests, api.host


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


def _enrich(args: argparse.Namespace) -> int:
    from policies.enrich import PodNetworks  # noqa: PLC0415
    from policies.manifests import dump_documents, enrich_file  # noqa: PLC0415
    from webhook.cluster.files import FileState  # noqa: PLC0415

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


def _rules_check(files: Sequence[Path]) -> int:
    from webhook.cluster.files import StateError, iter_manifests  # noqa: PLC0415
    from webhook.rules import parse_rule  # noqa: PLC0415

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


def _rules_explain(args: argparse.Namespace) -> int:
    from webhook.cluster.files import FileState  # noqa: PLC0415
    from webhook.decisions.explain import explain_pod  # noqa: PLC0415

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
