"""Which ENI carries a NAD's master interface on a node: found exactly, or said to be unknown.

`ethN` is the ENI attached at device index N of the node's instance, the order in
which EKS' own guide attaches them. A MAC in the Pod's network-status (ipvlan shares
its master's MAC) names the ENI exactly and wins. A master not named ethN is looked for
among the instance's ENIs by the subnet that holds the NAD's range. Anything but one
candidate is reported (MH061), never guessed: the public helpers that pick "the ENI in
the range's subnet" choose wrong when two ENIs share a subnet.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from webhook.aws.facts import Ec2Facts, Eni, Subnet

_ETH: Final = re.compile(r"eth(\d+)")


@dataclass(frozen=True)
class Carrier:
    """The ENI under `interface` on one instance, or the candidates when there is not exactly one."""

    interface: str
    instance_id: str
    eni: Eni | None
    candidates: tuple[Eni, ...] = ()
    how: str = ""  # how it was found: "the MAC in network-status", "device index N", "subnet"

    @property
    def why_not(self) -> str:
        """What is wrong when no ENI was found: none, or which ones could be it."""
        if self.eni is not None:
            return ""
        if not self.candidates:
            return f"no ENI of {self.instance_id} is {self.interface} ({self.how})"
        names = ", ".join(e.id for e in self.candidates)
        return f"{len(self.candidates)} ENIs of {self.instance_id} could be {self.interface} ({self.how}): {names}"


def carrier(
    interface: str,
    instance_id: str,
    facts: Ec2Facts,
    *,
    mac: str = "",
    holds_range: Callable[[Subnet], bool] | None = None,
) -> Carrier:
    """The ENI carrying `interface` (a NAD's master) on `instance_id`.

    `mac` is the interface's MAC from network-status, when Multus reported one;
    `holds_range` says whether a subnet holds the NAD's addresses, for a master not named ethN.
    """
    enis = facts.enis_of(instance_id)
    if mac:
        by_mac = tuple(e for e in enis if e.mac == mac.lower())
        if len(by_mac) == 1:
            return Carrier(interface, instance_id, by_mac[0], how="the MAC in network-status")
    numbered = _ETH.fullmatch(interface)
    if numbered:
        index = int(numbered[1])
        found = tuple(e for e in enis if e.device_index == index)
        return _one(interface, instance_id, found, f"device index {index}")
    if holds_range is None:
        return Carrier(interface, instance_id, None, how="not named ethN, and no range to match a subnet")
    found = tuple(
        e
        for e in enis
        if e.device_index != 0 and e.subnet_id in facts.subnets and holds_range(facts.subnets[e.subnet_id])
    )
    return _one(interface, instance_id, found, "not named ethN: by the subnet that holds the NAD's range")


def _one(interface: str, instance_id: str, found: tuple[Eni, ...], how: str) -> Carrier:
    if len(found) == 1:
        return Carrier(interface, instance_id, found[0], how=how)
    return Carrier(interface, instance_id, None, found, how=how)
