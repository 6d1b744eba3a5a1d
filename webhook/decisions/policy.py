"""What the admission decisions are configured with: the `serve` flags that change an answer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from webhook.options import check_one_of

DefaultNetworkMode = Literal["deny", "warn"]
UnsupportedTypesMode = Literal["warn", "deny"]
IsolationMode = Literal["warn", "strict", "off"]
MissingNetworksMode = Literal["warn", "deny"]
IpConflictsMode = Literal["warn", "deny"]


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
class AdmissionPolicy:
    """How strict each admission check is, and who may change `multihome.io/` labels."""

    default_network: DefaultNetworkMode = "deny"
    unsupported_types: UnsupportedTypesMode = "warn"
    namespace_isolation: IsolationMode = "warn"
    global_namespaces: frozenset[str] = frozenset({"kube-system"})
    missing_networks: MissingNetworksMode = "warn"
    ip_conflicts: IpConflictsMode = "warn"
    label_admins: tuple[Principal, ...] = ()
    label_admin_role: str = "multihome-label-admin"
    # serve --ip-management: Pods given a VPC-routed network wait for multihome.io/secondary-ips.
    readiness_gate: bool = False

    def __post_init__(self) -> None:
        check_one_of("default-network", self.default_network, ("deny", "warn"))
        check_one_of("unsupported-types", self.unsupported_types, ("warn", "deny"))
        check_one_of("namespace-isolation", self.namespace_isolation, ("warn", "strict", "off"))
        check_one_of("missing-networks", self.missing_networks, ("warn", "deny"))
        check_one_of("ip-conflicts", self.ip_conflicts, ("warn", "deny"))

    def is_label_admin(self, username: str, groups: Iterable[str]) -> bool:
        """True when the user may change `multihome.io/` namespace labels."""
        group_list = list(groups)
        return any(p.matches(username, group_list) for p in self.label_admins)
