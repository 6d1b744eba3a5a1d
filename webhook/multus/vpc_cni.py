"""The Amazon VPC CNI, named once: its CNI types, and how Multus' config names it.

On EKS it is the primary network (eth0) and nothing else. A secondary network that
runs it, a Pod or rule that attaches one, and a Multus whose default network is not
it are all judged with the two predicates here.
"""

from __future__ import annotations

from typing import Final

# The VPC CNI and its egress helpers, as `type` in a CNI config.
VPC_CNI_TYPES: Final = frozenset({"aws-cni", "egress-cni", "egress-v4-cni", "egress-v6-cni"})
# Its config on a node, as Multus' `clusterNetwork` or a delegate may name it.
VPC_CNI_CONFIG_NAMES: Final = frozenset({"aws-node", "10-aws.conflist"})


def is_vpc_cni_type(cni_type: str) -> bool:
    """True for a CNI `type` that is the VPC CNI or one of its helpers."""
    return cni_type in VPC_CNI_TYPES


def is_vpc_cni_network(name: str) -> bool:
    """True when a Multus network name or config path (`clusterNetwork`) is the VPC CNI's."""
    base = name.rsplit("/", 1)[-1]
    return is_vpc_cni_type(base) or base in VPC_CNI_CONFIG_NAMES or base.endswith("-aws.conflist")
