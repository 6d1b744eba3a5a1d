"""The Multus model: the networks annotation grammar, NAD configs and their IPAM pools, Kubernetes names and label selectors."""
