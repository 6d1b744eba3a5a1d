"""The addresses and ports of a secondary network, as far as its NAD says.

CIDRs come from the IPAM section of the config, or of any plugin of a conflist:

- host-local: `subnet` (with the legacy top-level `rangeStart`/`rangeEnd`), and
  `ranges`, a list of range sets, each a list of `{subnet, rangeStart, rangeEnd}`;
- whereabouts: `range` (a CIDR, or `first-last/prefix`), `range_start`/`range_end`,
  `exclude`, and `ipRanges` (a list of objects with the same fields);
- static: `addresses[].address` (each a host address).

A range narrowed by a start or end yields the smallest CIDRs that cover exactly it,
so a policy admits no address the IPAM never hands out. When the IPAM says nothing
(dhcp, a config on disk, static addresses from the Pod), the `multihome.io/cidrs`
annotation is used; failing that the addressing is unknown, with the reason.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from webhook.multus.annotations import CIDRS
from webhook.multus.json_types import json_type_name

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Protocol = Literal["TCP", "UDP", "SCTP"]
PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
PORTS_EXAMPLE: Final = "TCP/2152, UDP/8805, TCP/30000-30100"


@dataclass(frozen=True)
class NetworkAddressing:
    """The CIDRs of a network and where they came from; or why they are unknown."""

    cidrs: tuple[IPNetwork, ...] = ()
    source: Literal["ipam", "annotation", "none"] = "none"
    unknown_reason: str | None = "the NetworkAttachmentDefinition has no config"
    error: str | None = None

    @property
    def known(self) -> bool:
        """True when the CIDRs are known."""
        return bool(self.cidrs)


@dataclass(frozen=True, order=True)
class PortRange:
    """A protocol and a port, or an inclusive range of ports (`end_port`)."""

    protocol: Protocol
    port: int
    end_port: int | None = None

    def __str__(self) -> str:
        if self.end_port is None:
            return f"{self.protocol}/{self.port}"
        return f"{self.protocol}/{self.port}-{self.end_port}"


def addressing_of(
    config: Mapping[str, Any] | None, annotations: Mapping[str, str], *, on_disk: bool
) -> NetworkAddressing:
    """What is known of a network's addresses, from its config and then its annotation."""
    try:
        cidrs = ipam_cidrs(config) if config else []
    except ValueError as err:
        return NetworkAddressing(unknown_reason=str(err), error=str(err))
    if cidrs:
        return NetworkAddressing(tuple(cidrs), "ipam", None)
    annotated = annotations.get(CIDRS, "").strip()
    if annotated:
        try:
            return NetworkAddressing(tuple(parse_cidr_list(annotated)), "annotation", None)
        except ValueError as err:
            return NetworkAddressing(unknown_reason=str(err), error=str(err))
    return NetworkAddressing(unknown_reason=_why_unknown(config, on_disk=on_disk))


def _why_unknown(config: Mapping[str, Any] | None, *, on_disk: bool) -> str:
    fix = f"; set the {CIDRS} annotation on the NetworkAttachmentDefinition"
    if on_disk:
        return "spec.config is empty, so Multus reads the config from the node's disk" + fix
    ipam_types = [str(ipam.get("type")) for _, ipam in _ipam_sections(config or {})]
    if not ipam_types:
        return "the config has no IPAM section" + fix
    if "dhcp" in ipam_types:
        return "IPAM dhcp assigns addresses at run time" + fix
    if "static" in ipam_types:
        return "static IPAM lists no addresses (they come from the Pod's ips)" + fix
    return f'IPAM type "{ipam_types[0]}" does not declare its ranges' + fix


def _ipam_sections(config: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    plugins = config.get("plugins")
    if isinstance(plugins, list):
        return [
            (f"plugins[{i}].ipam", p["ipam"])
            for i, p in enumerate(plugins)
            if isinstance(p, dict) and isinstance(p.get("ipam"), dict)
        ]
    ipam = config.get("ipam")
    return [("ipam", ipam)] if isinstance(ipam, dict) else []


def ipam_cidrs(config: Mapping[str, Any]) -> list[IPNetwork]:
    """CIDRs the IPAM of a CNI config or conflist hands out, collapsed; ValueError if invalid."""
    found: list[IPNetwork] = []
    for where, ipam in _ipam_sections(config):
        kind = ipam.get("type")
        if kind == "host-local":
            found.extend(_host_local(where, ipam))
        elif kind == "whereabouts":
            found.extend(_whereabouts(where, ipam))
        elif kind == "static":
            found.extend(_static(where, ipam))
    return collapse(found)


def _host_local(where: str, ipam: Mapping[str, Any]) -> list[IPNetwork]:
    found: list[IPNetwork] = []
    if ipam.get("subnet"):
        found.extend(_range(where, ipam.get("subnet"), ipam.get("rangeStart"), ipam.get("rangeEnd")))
    ranges = ipam.get("ranges")
    if ranges is None:
        return found
    for i, range_set in enumerate(_list(f"{where}.ranges", ranges)):
        for j, item in enumerate(_list(f"{where}.ranges[{i}]", range_set)):
            at = f"{where}.ranges[{i}][{j}]"
            if not isinstance(item, dict):
                raise ValueError(f"{at} is a JSON {json_type_name(item)}; expected an object")
            found.extend(_range(at, item.get("subnet"), item.get("rangeStart"), item.get("rangeEnd")))
    return found


def _whereabouts(where: str, ipam: Mapping[str, Any]) -> list[IPNetwork]:
    found: list[IPNetwork] = []
    sections: list[tuple[str, Mapping[str, Any]]] = []
    if ipam.get("range"):
        sections.append((where, ipam))
    for i, item in enumerate(_list(f"{where}.ipRanges", ipam.get("ipRanges") or [])):
        if not isinstance(item, dict):
            raise ValueError(f"{where}.ipRanges[{i}] is a JSON {json_type_name(item)}; expected an object")
        sections.append((f"{where}.ipRanges[{i}]", item))
    for at, section in sections:
        cidrs = _whereabouts_range(at, section)
        excluded = [
            _network(f"{at}.exclude", text) for text in _list(f"{at}.exclude", section.get("exclude") or [])
        ]
        found.extend(subtract(cidrs, excluded))
    return found


def _whereabouts_range(at: str, section: Mapping[str, Any]) -> list[IPNetwork]:
    text = section.get("range")
    if not isinstance(text, str):
        raise ValueError(f"{at}.range is a JSON {json_type_name(text)}; expected a CIDR")
    start, end = section.get("range_start"), section.get("range_end")
    if "-" in text:
        # `first-last/prefix`: the prefix says the network, the pair the addresses in it.
        span, _, prefix = text.partition("/")
        first, _, last = span.partition("-")
        subnet = f"{first.strip()}/{prefix.strip()}"
        return _range(f"{at}.range", subnet, start or first.strip(), end or last.strip())
    return _range(f"{at}.range", text, start, end)


def _static(where: str, ipam: Mapping[str, Any]) -> list[IPNetwork]:
    found: list[IPNetwork] = []
    for i, item in enumerate(_list(f"{where}.addresses", ipam.get("addresses") or [])):
        at = f"{where}.addresses[{i}].address"
        address = item.get("address") if isinstance(item, dict) else None
        if not isinstance(address, str):
            raise ValueError(f"{at} is missing; expected an address such as 10.10.3.5/24")
        try:
            host = ipaddress.ip_interface(address.strip()).ip
        except ValueError:
            raise ValueError(f'{at} "{address}" is not an address such as 10.10.3.5/24') from None
        found.append(ipaddress.ip_network(host))
    return found


def _range(at: str, subnet: object, start: object, end: object) -> list[IPNetwork]:
    network = _network(f"{at}.subnet" if not at.endswith(".range") else at, subnet)
    if not start and not end:
        return [network]
    first = _address_in(f"{at}.rangeStart", start, network) if start else network[0]
    last = _address_in(f"{at}.rangeEnd", end, network) if end else network[-1]
    if first.version != last.version or int(first) > int(last):
        raise ValueError(f"{at}: range start {first} is after range end {last}")
    return list(ipaddress.summarize_address_range(first, last))


def _network(at: str, text: object) -> IPNetwork:
    if not isinstance(text, str):
        raise ValueError(f"{at} is a JSON {json_type_name(text)}; expected a CIDR such as 10.10.1.0/24")
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f'{at} "{text}" is not a CIDR such as 10.10.1.0/24') from None


def _address_in(at: str, text: object, network: IPNetwork) -> IPAddress:
    if not isinstance(text, str):
        raise ValueError(f"{at} is a JSON {json_type_name(text)}; expected an IP address")
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f'{at} "{text}" is not an IP address') from None
    if address not in network:
        raise ValueError(f"{at} {address} is outside {network}")
    return address


def _list(at: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{at} is a JSON {json_type_name(value)}; expected a list")
    return value


def collapse(cidrs: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Deduplicate and merge CIDRs; IPv4 first, then IPv6, each in address order.

    The same result as `ipaddress.collapse_addresses`, computed on integer spans: an
    order of magnitude faster on the thousand-CIDR unions that policies over many
    namespaces produce.
    """
    spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for cidr in cidrs:
        spans[cidr.version].append((int(cidr.network_address), int(cidr.broadcast_address)))
    result: list[IPNetwork] = []
    for version, address in ((4, ipaddress.IPv4Address), (6, ipaddress.IPv6Address)):
        for first, last in merge_spans(spans[version]):
            result.extend(ipaddress.summarize_address_range(address(first), address(last)))
    return result


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive integer spans sorted, with overlapping and adjacent ones joined."""
    merged: list[list[int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return [(first, last) for first, last in merged]


def subtract(cidrs: Sequence[IPNetwork], excluded: Sequence[IPNetwork]) -> list[IPNetwork]:
    """`cidrs` without any address in `excluded`."""
    remaining = list(cidrs)
    for hole in excluded:
        next_round: list[IPNetwork] = []
        for cidr in remaining:
            if cidr.version != hole.version or not cidr.overlaps(hole):
                next_round.append(cidr)
            elif not hole.supernet_of(cidr):  # type: ignore[arg-type]
                next_round.extend(cidr.address_exclude(hole))  # type: ignore[arg-type]
        remaining = next_round
    return collapse(remaining)


def parse_cidr_list(text: str) -> list[IPNetwork]:
    """Parse the `multihome.io/cidrs` annotation: comma-separated CIDRs."""
    cidrs: list[IPNetwork] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            cidrs.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f'{CIDRS} item "{item}" is not a CIDR; expected e.g. "10.10.1.0/24, 2600:1f14::/64"'
            ) from None
    if not cidrs:
        raise ValueError(f'{CIDRS} is empty; expected e.g. "10.10.1.0/24, 2600:1f14::/64"')
    return collapse(cidrs)


def parse_ports(text: str) -> tuple[PortRange, ...]:
    """Parse the `multihome.io/ports` annotation, e.g. `TCP/2152, UDP/8805, TCP/30000-30100`."""
    ports: list[PortRange] = []
    for raw in text.split(","):
        item = raw.strip()
        if item:
            ports.append(_parse_port(item))
    return tuple(sorted(set(ports)))


def _parse_port(item: str) -> PortRange:
    expected = f"expected PROTOCOL/PORT or PROTOCOL/FIRST-LAST, e.g. {PORTS_EXAMPLE}"
    protocol, slash, numbers = item.partition("/")
    protocol = protocol.strip().upper()
    if not slash or protocol not in PROTOCOLS:
        raise ValueError(f'port "{item}": protocol must be TCP, UDP or SCTP; {expected}')
    first_text, dash, last_text = numbers.partition("-")
    first = _port_number(item, first_text, expected)
    last = _port_number(item, last_text, expected) if dash else None
    if last is not None and last < first:
        raise ValueError(f'port "{item}": range ends ({last}) before it starts ({first}); {expected}')
    if last == first:
        last = None
    return PortRange(protocol, first, last)  # type: ignore[arg-type]


def _port_number(item: str, text: str, expected: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535):
        raise ValueError(f'port "{item}": "{text}" is not a port number 1-65535; {expected}')
    return int(text)


# --- allocation pools: the addresses an IPAM really hands to Pods ----------------------------


@dataclass(frozen=True)
class Pool:
    """The addresses one IPAM range hands to Pods, as inclusive spans of integers.

    Unlike the CIDRs above (what a policy must admit), a pool is exact: host-local and
    whereabouts never hand out a subnet's network address, host-local never its IPv4
    broadcast address nor its gateway (which defaults to the first address), whereabouts
    skips `exclude` and, with `exclude_gateway`, its gateway. `store` names where
    allocations are tracked: two pools with the same store never hand out one address
    twice (host-local: the same network name and data directory on a node; whereabouts:
    the same `network_name` with `enable_overlapping_ranges`, its default).
    """

    where: str
    ipam: str
    version: int
    spans: tuple[tuple[int, int], ...]
    subnet: IPNetwork | None = None
    gateway: IPAddress | None = None
    store: str | None = None

    @property
    def size(self) -> int:
        """How many addresses the pool hands out."""
        return spans_size(self.spans)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        value = int(address)
        return address.version == self.version and any(first <= value <= last for first, last in self.spans)


def ipam_pools(config: Mapping[str, Any], network_name: str = "") -> list[Pool]:
    """The allocation pools of a CNI config or conflist; ValueError as `ipam_cidrs` raises it.

    `network_name` is the CNI network's name when the config has none (Multus uses the
    NetworkAttachmentDefinition's name).
    """
    name = str(config.get("name") or network_name)
    pools: list[Pool] = []
    for where, ipam in _ipam_sections(config):
        kind = ipam.get("type")
        if kind == "host-local":
            store = f"host-local:{ipam.get('dataDir') or '/var/lib/cni/networks'}:{name}"
            items = [(where, ipam)] if ipam.get("subnet") else []
            for i, range_set in enumerate(_list(f"{where}.ranges", ipam.get("ranges") or [])):
                for j, item in enumerate(_list(f"{where}.ranges[{i}]", range_set)):
                    if not isinstance(item, dict):
                        raise ValueError(
                            f"{where}.ranges[{i}][{j}] is a JSON {json_type_name(item)}; expected an object"
                        )
                    items.append((f"{where}.ranges[{i}][{j}]", item))
            pools.extend(_host_local_pool(at, item, store) for at, item in items)
        elif kind == "whereabouts":
            pools.extend(_whereabouts_pools(where, ipam))
        elif kind == "static":
            for network in _static(where, ipam):
                value = int(network.network_address)
                pools.append(Pool(where, "static", network.version, ((value, value),)))
    return pools


def _last_usable(network: IPNetwork) -> int:
    # The IPv4 broadcast address is never handed out; IPv6 has none.
    return int(network.broadcast_address) - (1 if network.version == 4 else 0)


def _host_local_pool(at: str, item: Mapping[str, Any], store: str) -> Pool:
    subnet = _network(f"{at}.subnet", item.get("subnet"))
    start, end = item.get("rangeStart"), item.get("rangeEnd")
    first = int(_address_in(f"{at}.rangeStart", start, subnet)) if start else int(subnet.network_address) + 1
    last = int(_address_in(f"{at}.rangeEnd", end, subnet)) if end else _last_usable(subnet)
    gateway = (
        _address_in(f"{at}.gateway", item["gateway"], subnet)
        if item.get("gateway")
        else subnet.network_address + 1
    )
    spans = _without(((first, last),), [(int(gateway), int(gateway))])
    return Pool(at, "host-local", subnet.version, spans, subnet, gateway, store)


def _whereabouts_pools(where: str, ipam: Mapping[str, Any]) -> list[Pool]:
    sections: list[tuple[str, Mapping[str, Any]]] = [(where, ipam)] if ipam.get("range") else []
    for i, item in enumerate(_list(f"{where}.ipRanges", ipam.get("ipRanges") or [])):
        if isinstance(item, dict):
            sections.append((f"{where}.ipRanges[{i}]", item))
    protected = ipam.get("enable_overlapping_ranges") is not False
    store = f"whereabouts:{ipam.get('network_name') or ''}" if protected else None
    pools = []
    for at, section in sections:
        text = str(section.get("range"))
        span, _, prefix = text.partition("/")
        first_text, dash, last_text = span.partition("-")
        subnet = _network(f"{at}.range", f"{first_text.strip()}/{prefix.strip()}" if dash else text)
        start = section.get("range_start") or (first_text.strip() if dash else None)
        end = section.get("range_end") or (last_text.strip() if dash else None)
        first = (
            int(_address_in(f"{at}.range_start", start, subnet)) if start else int(subnet.network_address) + 1
        )
        last = int(_address_in(f"{at}.range_end", end, subnet)) if end else _last_usable(subnet)
        holes = [
            (int(n.network_address), int(n.broadcast_address))
            for n in (
                _network(f"{at}.exclude", t) for t in _list(f"{at}.exclude", section.get("exclude") or [])
            )
        ]
        gateway_text = ipam.get("gateway")
        gateway = _address_in(f"{where}.gateway", gateway_text, subnet) if gateway_text else None
        if gateway is not None and ipam.get("exclude_gateway") is True:
            holes.append((int(gateway), int(gateway)))
        pools.append(
            Pool(at, "whereabouts", subnet.version, _without(((first, last),), holes), subnet, gateway, store)
        )
    return pools


def _without(
    spans: Sequence[tuple[int, int]], holes: Sequence[tuple[int, int]]
) -> tuple[tuple[int, int], ...]:
    """Integer spans less the holes."""
    result = list(spans)
    for hole_first, hole_last in holes:
        remaining = []
        for first, last in result:
            if hole_last < first or last < hole_first:
                remaining.append((first, last))
                continue
            if first < hole_first:
                remaining.append((first, hole_first - 1))
            if hole_last < last:
                remaining.append((hole_last + 1, last))
        result = remaining
    return tuple(sorted(s for s in result if s[0] <= s[1]))


def spans_size(spans: Iterable[tuple[int, int]]) -> int:
    """How many addresses inclusive integer spans hold."""
    return sum(last - first + 1 for first, last in spans)


def span_text(version: int, first: int, last: int) -> str:
    """`10.0.4.2` or `10.0.4.2-10.0.4.3`."""
    address = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return str(address(first)) if first == last else f"{address(first)}-{address(last)}"
