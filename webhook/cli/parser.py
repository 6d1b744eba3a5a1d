"""The command line: every command's flags, and the settings they make.

Every flag has an environment default, `MULTIHOME_` and the flag's name in upper
case with `_` for `-` (`--tls-cert` is `MULTIHOME_TLS_CERT`). Settings are read
and checked once, before anything starts; a bad value stops the command with a
message naming the setting and the expected form. This module loads no command.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Final

from policies.controllers.settings import DEFAULT_CONTROLLER_BIND, ControllerSettings
from webhook import __version__
from webhook.decisions.policy import AdmissionPolicy, Principal
from webhook.multus.annotations import NETWORKS
from webhook.options import parse_list
from webhook.server.settings import DEFAULT_BIND, DEFAULT_MAX_BODY_BYTES, ServeSettings

ENV_PREFIX: Final = "MULTIHOME_"


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
    serve.add_argument(
        "--ip-management",
        action="store_true",
        default=_env("--ip-management", "") == "true",
        help="add the multihome.io/secondary-ips readiness gate to Pods given a VPC-routed network; "
        "the controller's --ip-management sets it (no AWS access here; env MULTIHOME_IP_MANAGEMENT=true)",
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
    controller.add_argument(
        "--aws",
        action="store_true",
        default=_env("--aws", "") == "true",
        help="read EC2 (the SDK's credentials, AWS_REGION, AWS_ENDPOINT_URL_EC2) for the MH06x checks "
        "(env MULTIHOME_AWS=true)",
    )
    _flag(controller, "--aws-interval", "seconds between EC2 reads for the MH06x checks", default="180")
    controller.add_argument(
        "--ip-management",
        action="store_true",
        default=_env("--ip-management", "") == "true",
        help="with --aws: assign Pods' secondary addresses to their ENIs and set their "
        "multihome.io/secondary-ips condition (env MULTIHOME_IP_MANAGEMENT=true)",
    )
    _flag(controller, "--ip-sweep-interval", "seconds between full passes that repair drift", default="300")


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
        aws=bool(args.aws),
        aws_interval=_seconds("aws-interval", args.aws_interval),
        ip_management=bool(args.ip_management),
        ip_sweep_interval=_seconds("ip-sweep-interval", args.ip_sweep_interval),
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
    audit.add_argument(
        "--aws",
        action="store_true",
        default=_env("--aws", "") == "true",
        help="also read EC2 (the SDK's credentials, AWS_REGION, AWS_ENDPOINT_URL_EC2) for the MH06x checks "
        "(env MULTIHOME_AWS=true)",
    )

    aws = commands.add_parser("aws", help="what multihome needs on AWS")
    aws_commands = aws.add_subparsers(dest="aws_command", required=True)
    policy = aws_commands.add_parser("iam-policy", help="print the least-privilege IAM policy (JSON)")
    policy.add_argument(
        "--ip-management", action="store_true", help="add the address writes, only on ENIs tagged no_manage"
    )

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
        readiness_gate=bool(args.ip_management),
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


def _seconds(flag: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f'--{flag} "{value}" is not a number of seconds') from None


def _on_off(flag: str, value: str) -> bool:
    if value not in ("on", "off"):
        raise ValueError(f'--{flag} "{value}" is not one of: on, off')
    return value == "on"
