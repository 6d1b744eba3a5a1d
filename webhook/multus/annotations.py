"""Annotation and label keys: Multus' own, used as is, and multihome's (`multihome.io/`)."""

from typing import Final

# Multus (k8snetworkplumbingwg/multus-cni): read exactly as Multus reads them.
NETWORKS: Final = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS: Final = "k8s.v1.cni.cncf.io/network-status"
DEFAULT_NETWORK: Final = "v1.multus-cni.io/default-network"
MULTI_POLICY_FOR: Final = "k8s.v1.cni.cncf.io/policy-for"

# The VPC CNI's own multi-NIC feature; not a Multus secondary, never blocked.
VPC_NIC_CONFIG: Final = "k8s.amazonaws.com/nicConfig"

PREFIX: Final = "multihome.io/"
INJECT: Final = PREFIX + "inject"
INJECTED_BY: Final = PREFIX + "injected-by"
PORTS: Final = PREFIX + "ports"
CIDRS: Final = PREFIX + "cidrs"
ENRICH: Final = PREFIX + "enrich"
ENRICHMENT: Final = PREFIX + "enrichment"
IGNORE: Final = PREFIX + "ignore"
PROFILE: Final = PREFIX + "profile"

NAD_GROUP: Final = "k8s.cni.cncf.io"
NAD_KIND: Final = "NetworkAttachmentDefinition"
RULE_GROUP: Final = "multihome.io"
RULE_VERSION: Final = "v1alpha1"
RULE_KIND: Final = "AttachmentRule"
# The readiness gate IP management adds, and the Pod condition the controller sets for it.
SECONDARY_IPS_GATE: Final = "multihome.io/secondary-ips"
