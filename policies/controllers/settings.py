"""What the background process (`controller`) is configured with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from webhook.options import LOG_LEVELS, check_host_port, check_one_of

DEFAULT_CONTROLLER_BIND: Final = "0.0.0.0:8080"


@dataclass(frozen=True)
class ControllerSettings:
    """One frozen object, read once at start-up from `controller` flags with MULTIHOME_ defaults."""

    bind: str = DEFAULT_CONTROLLER_BIND
    kubeconfig: Path | None = None
    kube_context: str = ""
    log_level: str = "info"
    reconcile: bool = True
    dry_run: bool = False
    lease_namespace: str = "multihome"
    lease_name: str = "multihome-reconciler"
    cert_secret: str = ""
    cert_service: str = "multihome"
    webhook_configuration: str = ""
    audit_interval: float = 60.0
    aws: bool = False
    aws_interval: float = 180.0
    ip_management: bool = False
    ip_sweep_interval: float = 300.0

    def __post_init__(self) -> None:
        check_one_of("log-level", self.log_level, LOG_LEVELS)
        check_host_port(self.bind)
        if self.cert_secret and "/" not in self.cert_secret.strip("/"):
            raise ValueError(f'--cert-secret "{self.cert_secret}" is not NAMESPACE/NAME')
        if self.audit_interval < 1:
            raise ValueError("--audit-interval must be at least 1 second")
        if self.ip_management and not self.aws:
            raise ValueError("--ip-management needs --aws: it assigns addresses through EC2")
        if self.ip_sweep_interval < 10:
            raise ValueError("--ip-sweep-interval must be at least 10 seconds")
        if self.aws_interval < 10:
            raise ValueError(
                "--aws-interval must be at least 10 seconds: EC2 throttles an account's callers together"
            )
