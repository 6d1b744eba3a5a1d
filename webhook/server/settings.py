"""What `serve` is configured with: where it listens, what it reads, and its admission policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from webhook.decisions.policy import AdmissionPolicy
from webhook.options import LOG_LEVELS, check_host_port, check_one_of

DEFAULT_BIND: Final = "0.0.0.0:8443"
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """One frozen object, read once at start-up from flags with MULTIHOME_ defaults."""

    bind: str = DEFAULT_BIND
    tls_cert: Path | None = None
    tls_key: Path | None = None
    state_dir: Path | None = None
    kubeconfig: Path | None = None
    kube_context: str = ""
    workers: int = 1
    threads: int = 4
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_level: str = "info"
    policy: AdmissionPolicy = field(default_factory=AdmissionPolicy)

    def __post_init__(self) -> None:
        check_one_of("log-level", self.log_level, LOG_LEVELS)
        if self.workers < 1 or self.threads < 1:
            raise ValueError("--workers and --threads must be at least 1")
        if self.max_body_bytes < 1024:
            raise ValueError("--max-body-bytes must be at least 1024")
        check_host_port(self.bind)
