"""What EC2 says about the cluster's nodes: their instances, ENIs, subnets and limits.

Plain records, built by `webhook.aws.ec2` from the Describe calls and read by the
checks and the IP manager; nothing here talks to AWS. Names follow EC2's own.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from webhook.decisions.checks import NO_MANAGE_KEY

# Node spec.providerID on EKS: aws:///<availability zone>/<instance id>.
_PROVIDER_ID: Final = re.compile(r"aws:///[^/]*/(i-[0-9a-f]+)")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def canonical(address: str) -> str:
    """An IP address as EC2 and the checks compare it (IPv6 compressed, lower case); else as given."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def instance_id_of(provider_id: str) -> str | None:
    """The EC2 instance ID in a Node's `spec.providerID`, or None for a node not on EC2."""
    found = _PROVIDER_ID.fullmatch(provider_id.strip())
    return found[1] if found else None


@dataclass(frozen=True)
class Eni:
    """A network interface attached to an instance."""

    id: str
    instance_id: str
    device_index: int
    network_card_index: int
    mac: str
    subnet_id: str
    primary_ip: str
    # Secondary private IPv4 addresses (not the primary), and IPv6 addresses.
    secondary_ips: tuple[str, ...] = ()
    ipv6_ips: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def no_manage(self) -> bool:
        """True when tagged `node.k8s.amazonaws.com/no_manage=true` (exactly): the VPC CNI leaves it alone."""
        return self.tags.get(NO_MANAGE_KEY) == "true"

    def holds(self, address: str) -> bool:
        """True when EC2 has `address` assigned to this ENI (primary, secondary or IPv6)."""
        return address == self.primary_ip or address in self.secondary_ips or address in self.ipv6_ips


@dataclass(frozen=True)
class Subnet:
    """A subnet, its CIDRs and its explicit CIDR reservations."""

    id: str
    cidr: ipaddress.IPv4Network
    ipv6_cidrs: tuple[ipaddress.IPv6Network, ...] = ()
    explicit_reservations: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class Instance:
    """An instance behind a Node."""

    id: str
    type: str


@dataclass(frozen=True)
class Ec2Facts:
    """One read of EC2 for a set of instances; `read_at` is when (time.time())."""

    instances: Mapping[str, Instance]
    enis: Sequence[Eni]
    subnets: Mapping[str, Subnet]
    # Instance type: IPv4 addresses per interface (the primary included).
    addresses_per_interface: Mapping[str, int]
    read_at: float = 0.0

    def enis_of(self, instance_id: str) -> list[Eni]:
        """The ENIs attached to `instance_id`, by network card and device index."""
        return sorted(
            (e for e in self.enis if e.instance_id == instance_id),
            key=lambda e: (e.network_card_index, e.device_index),
        )
