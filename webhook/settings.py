"""Settings: one frozen object, read once at start-up from flags with MULTIHOME_ defaults."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

DefaultNetworkMode = Literal["deny", "warn"]
UnsupportedTypesMode = Literal["warn", "deny"]
IsolationMode = Literal["warn", "strict", "off"]
MissingNetworksMode = Literal["warn", "deny"]
IpConflictsMode = Literal["warn", "deny"]

DEFAULT_BIND: Final = "0.0.0.0:8443"
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True)
class Principal:
    """A user or group allowed to do something: `user:NAME`, `group:NAME`, or a bare NAME (either)."""

    kind: Literal["user", "group", "any"]
    name: str

    @classmethod
    def parse(cls, text: str) -> Principal:
        """Parse `user:NAME`, `group:NAME` or `NAME`."""
        text = text.strip()
        expected = 'expected "user:NAME", "group:NAME" or a bare NAME (user or group)'
        for prefix in ("user", "group"):
            if text.startswith(prefix + ":"):
                name = text[len(prefix) + 1 :].strip()
                if not name:
                    raise ValueError(f'--label-admins entry "{text}" has no name; {expected}')
                return cls("user" if prefix == "user" else "group", name)
        if not text:
            raise ValueError(f"--label-admins has an empty entry; {expected}")
        return cls("any", text)

    def matches(self, username: str, groups: Iterable[str]) -> bool:
        """True when the user, or one of their groups, is this principal."""
        if self.kind in ("user", "any") and username == self.name:
            return True
        return self.kind in ("group", "any") and self.name in set(groups)

    def __str__(self) -> str:
        return self.name if self.kind == "any" else f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Settings:
    """Everything the server and the decisions are configured with."""

    bind: str = DEFAULT_BIND
    tls_cert: Path | None = None
    tls_key: Path | None = None
    state_dir: Path | None = None
    kubeconfig: Path | None = None
    kube_context: str = ""
    workers: int = 1
    threads: int = 4
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    default_network: DefaultNetworkMode = "deny"
    unsupported_types: UnsupportedTypesMode = "warn"
    namespace_isolation: IsolationMode = "warn"
    global_namespaces: frozenset[str] = frozenset({"kube-system"})
    missing_networks: MissingNetworksMode = "warn"
    ip_conflicts: IpConflictsMode = "warn"
    label_admins: tuple[Principal, ...] = ()
    label_admin_role: str = "multihome-label-admin"
    log_level: str = "info"

    def __post_init__(self) -> None:
        _one_of("default-network", self.default_network, ("deny", "warn"))
        _one_of("unsupported-types", self.unsupported_types, ("warn", "deny"))
        _one_of("namespace-isolation", self.namespace_isolation, ("warn", "strict", "off"))
        _one_of("missing-networks", self.missing_networks, ("warn", "deny"))
        _one_of("ip-conflicts", self.ip_conflicts, ("warn", "deny"))
        _one_of("log-level", self.log_level, ("debug", "info", "warning", "error"))
        if self.workers < 1 or self.threads < 1:
            raise ValueError("--workers and --threads must be at least 1")
        if self.max_body_bytes < 1024:
            raise ValueError("--max-body-bytes must be at least 1024")
        _host_port(self.bind)

    def is_label_admin(self, username: str, groups: Iterable[str]) -> bool:
        """True when the user may change `multihome.io/` namespace labels."""
        group_list = list(groups)
        return any(p.matches(username, group_list) for p in self.label_admins)


DEFAULT_CONTROLLER_BIND: Final = "0.0.0.0:8080"


@dataclass(frozen=True)
class ControllerSettings:
    """What the background process (`controller`) is configured with."""

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

    def __post_init__(self) -> None:
        _one_of("log-level", self.log_level, ("debug", "info", "warning", "error"))
        _host_port(self.bind)
        if self.cert_secret and "/" not in self.cert_secret.strip("/"):
            raise ValueError(f'--cert-secret "{self.cert_secret}" is not NAMESPACE/NAME')
        if self.audit_interval < 1:
            raise ValueError("--audit-interval must be at least 1 second")


def _host_port(bind: str) -> None:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'--bind "{bind}" is not HOST:PORT (e.g. 0.0.0.0:8443)')


def _one_of(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f'--{flag} "{value}" is not one of: {", ".join(choices)}')


def parse_list(text: str) -> list[str]:
    """Split a comma-separated flag value, dropping blanks."""
    return [item.strip() for item in text.split(",") if item.strip()]
