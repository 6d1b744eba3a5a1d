"""NetworkAttachmentDefinitions: their CNI configs, as Multus and libcni read them.

`spec.config` is either a single CNI config (an object with `type`) or a conflist
(an object with a `plugins` list, each plugin an object with `type`). An empty or
absent `spec.config` makes Multus load the on-disk config named after the NAD
(`/etc/cni/multus/net.d/<name>.conf`), which the cluster cannot see.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

from webhook.multus.annotations import PORTS
from webhook.multus.ipam import NetworkAddressing, Pool, PortRange, addressing_of, ipam_pools, parse_ports
from webhook.multus.json_types import json_type_name, object_field, string_map
from webhook.multus.kube_names import NamespacedName
from webhook.multus.vpc_cni import is_vpc_cni_type

# CNI types EKS does not support for secondary interfaces, with the reason.
UNSUPPORTED_TYPES: Final[Mapping[str, str]] = {
    "sriov": "EKS ships no SR-IOV device plugin or CNI; use host-device for a dedicated ENI",
    "ib-sriov": "EKS ships no InfiniBand SR-IOV plugin; use host-device",
    "userspace": "EKS ships no DPDK userspace CNI; use host-device with a DPDK-bound ENI",
    "vhostuser": "EKS ships no DPDK vhost-user CNI; use host-device",
    "macvlan": (
        "EC2 ENIs drop frames from MAC addresses they did not assign, so macvlan does not "
        "work across nodes; use ipvlan"
    ),
}


@dataclass(frozen=True)
class NetworkAttachment(NamespacedName):
    """A NetworkAttachmentDefinition, parsed once when it enters the state.

    Parsing never raises: a broken config is kept with its error, because the audit
    reports it and references to it must still resolve.
    """

    namespace: str
    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] | None = None
    config_error: str | None = None
    types: tuple[str, ...] = ()
    addressing: NetworkAddressing = field(default_factory=NetworkAddressing)
    ports: tuple[PortRange, ...] = ()
    ports_error: str | None = None
    # What the IPAM hands to Pods, exactly (empty when it says nothing or is invalid).
    pools: tuple[Pool, ...] = ()

    @cached_property
    def pool_bounds(self) -> Mapping[int, tuple[int, int]]:
        """By IP version, the lowest and highest address its pools hand out (as integers).

        Two NADs whose bounds do not meet cannot overlap: admitting one NAD looks its
        candidates up by these (`PoolBounds`, webhook/decisions/allocation.py) before the exact
        sweep, so they are worked out once per NAD, when first asked.
        """
        bounds: dict[int, tuple[int, int]] = {}
        for pool in self.pools:
            for first, last in pool.spans:  # min and max: not every pool's spans are merged
                low, high = bounds.get(pool.version, (first, last))
                bounds[pool.version] = (min(low, first), max(high, last))
        return bounds

    @property
    def on_disk(self) -> bool:
        """True when the spec has no config and Multus reads the on-disk file of this name."""
        return self.config is None and self.config_error is None

    @property
    def vpc_cni_types(self) -> tuple[str, ...]:
        """The Amazon VPC CNI types this NAD would run as a secondary, if any."""
        if self.on_disk:
            return (self.name,) if is_vpc_cni_type(self.name) else ()
        return tuple(t for t in self.types if is_vpc_cni_type(t))

    @property
    def unsupported_types(self) -> tuple[str, ...]:
        """Types in this NAD that EKS does not support for secondary interfaces."""
        return tuple(t for t in self.types if t in UNSUPPORTED_TYPES)


def parse_cni_config(text: str) -> dict[str, Any]:
    """Parse a CNI config or conflist; raise ValueError naming the field and the fix."""
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ValueError(
            f"spec.config is not valid JSON ({str(err)[:120]}); it must be a CNI config object "
            'such as {"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "ipam": {...}}'
        ) from None
    if not isinstance(config, dict):
        raise ValueError(
            f"spec.config is a JSON {json_type_name(config)}; it must be a CNI config object "
            'with a "type", or a conflist with a "plugins" list'
        )
    if "plugins" in config:
        plugins = config["plugins"]
        if not isinstance(plugins, list):
            raise ValueError(
                f'spec.config "plugins" is a JSON {json_type_name(plugins)}; a conflist needs a '
                "list of plugin objects"
            )
        if not plugins:
            raise ValueError('spec.config "plugins" is empty; a conflist needs at least one plugin')
        for index, plugin in enumerate(plugins):
            if not isinstance(plugin, dict):
                raise ValueError(
                    f"spec.config plugins[{index}] is a JSON {json_type_name(plugin)}; "
                    'each plugin must be an object with a "type"'
                )
            if not _nonempty_string(plugin.get("type")):
                raise ValueError(
                    f'spec.config plugins[{index}] has no "type"; name the CNI plugin binary, '
                    'e.g. "type": "ipvlan"'
                )
    elif not _nonempty_string(config.get("type")):
        raise ValueError(
            'spec.config has no "type"; name the CNI plugin binary (e.g. "type": "ipvlan"), '
            'or give a conflist with "plugins"'
        )
    return config


def plugin_configs(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The config itself for a single config, each plugin for a conflist."""
    plugins = config.get("plugins")
    if isinstance(plugins, list):
        return [p for p in plugins if isinstance(p, dict)]
    return [config]


# The plugins that put a Pod's interface on a node's interface, and the field that names it.
MASTER_FIELDS: Final[Mapping[str, str]] = {"ipvlan": "master", "macvlan": "master", "host-device": "device"}


def master_interfaces(nad: NetworkAttachment) -> list[tuple[str, str]]:
    """(plugin type, node interface) for each plugin of `nad` that sits on a node's interface."""
    if nad.config is None:
        return []
    found = []
    for plugin in plugin_configs(nad.config):
        plugin_type = plugin.get("type")
        field_name = MASTER_FIELDS.get(plugin_type) if isinstance(plugin_type, str) else None
        interface = plugin.get(field_name) if field_name else None
        if isinstance(plugin_type, str) and isinstance(interface, str) and interface:
            found.append((plugin_type, interface))
    return found


def vpc_routed(nad: NetworkAttachment) -> bool:
    """True when a Pod's address on this network must be assigned to an ENI to route: ipvlan on a master."""
    return any(plugin_type == "ipvlan" for plugin_type, _ in master_interfaces(nad))


def parse_network_attachment(obj: Mapping[str, Any]) -> NetworkAttachment:
    """Build a NetworkAttachment from a NAD manifest or API object."""
    metadata = object_field(obj, "metadata")
    annotations = string_map(metadata.get("annotations"))
    raw_config = object_field(obj, "spec").get("config")
    config: dict[str, Any] | None = None
    error: str | None = None
    if raw_config is not None and not isinstance(raw_config, str):
        error = f"spec.config is a {json_type_name(raw_config)}; it must be a string holding JSON"
    elif raw_config and raw_config.strip():
        try:
            config = parse_cni_config(raw_config)
        except ValueError as err:
            error = str(err)
    types = tuple(str(p.get("type")) for p in plugin_configs(config)) if config else ()
    try:
        ports = parse_ports(annotations.get(PORTS, ""))
        ports_error = None
    except ValueError as err:
        ports, ports_error = (), str(err)
    name = str(metadata.get("name") or "")
    addressing = addressing_of(config, annotations, on_disk=config is None and error is None)
    pools: tuple[Pool, ...] = ()
    if config is not None and addressing.error is None:
        try:
            pools = tuple(ipam_pools(config, name))
        except ValueError as err:  # a field only allocation reads, such as a gateway outside its subnet
            addressing = NetworkAddressing(unknown_reason=str(err), error=str(err))
    return NetworkAttachment(
        namespace=str(metadata.get("namespace") or "default"),
        name=name,
        annotations=annotations,
        config=config,
        config_error=error,
        types=types,
        addressing=addressing,
        ports=ports,
        ports_error=ports_error,
        pools=pools,
    )


def _nonempty_string(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())
