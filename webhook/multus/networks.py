"""The Multus network selection annotations, read exactly as Multus reads them.

Mirrors multus-cni `pkg/k8sclient/k8sclient.go` (ParsePodNetworkAnnotation,
parsePodNetworkObjectName) and `pkg/types/types.go` (NetworkSelectionElement):

- A value containing `[`, `{` or `"` is JSON: a list of NetworkSelectionElements.
  A single object is an error (Go cannot unmarshal an object into a slice), `null`
  is an empty list, unknown keys are ignored by Multus (kept here, so nothing a user
  wrote is lost), and keys match case-insensitively as Go's encoding/json does.
  `mac` and `infiniband-guid` must parse as Go's net.ParseMAC accepts, `ips` entries
  as IPs or CIDRs.
- Anything else is the comma form `[namespace/]name[@interface]`: items trimmed,
  more than one `/` or `@` is an error, namespace and name must be DNS-1123 labels,
  the interface at most 15 bytes with no whitespace or `/`.
- Elements without a namespace take the Pod's namespace.

multihome is stricter than Multus in two places, both of which Multus would only
discover later, at sandbox creation: an empty name (Multus parses `net1,` and then
fails to fetch a NAD called ""), and interface names the kernel refuses (`.`, `..`, `:`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from webhook.multus.json_types import json_type_name
from webhook.multus.kube_names import (
    NamespacedName,
    interface_name_problem,
    is_dns1123_label,
    is_dns1123_subdomain,
)

Form = Literal["comma", "json"]

COMMA_FORM_EXAMPLE: Final = "name, namespace/name or namespace/name@interface, comma-separated"
JSON_FORM_EXAMPLE: Final = '[{"name": "ipvlan-dp", "namespace": "team-a", "interface": "net1"}]'
# The namespace Multus gives a default-network element without one (its `multusNamespace`).
MULTUS_NAMESPACE: Final = "kube-system"

# JSON keys of NetworkSelectionElement, canonical spelling.
_KNOWN_KEYS: Final = (
    "name",
    "namespace",
    "ips",
    "mac",
    "infiniband-guid",
    "interface",
    "interfaceRequest",
    "portMappings",
    "bandwidth",
    "deviceID",
    "cni-args",
    "default-route",
    "ipam-claim-reference",
)
_KEY_BY_FOLDED: Final = {key.casefold(): key for key in _KNOWN_KEYS}
_JSON_MARKERS: Final = frozenset('[{"')
_MAC_OCTETS: Final = (6, 8, 20)
_COLON_MAC: Final = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2})*")
_DOTTED_MAC: Final = re.compile(r"[0-9A-Fa-f]{4}(\.[0-9A-Fa-f]{4})*")


@dataclass(frozen=True)
class NetworkSelection(NamespacedName):
    """One NetworkSelectionElement: a NAD to attach, and how.

    `namespace` is always resolved; `explicit_namespace` remembers whether the user
    wrote it, so formatting gives back what they wrote. Fields other than name,
    namespace and interface are kept as the JSON values they came in (`options`),
    together with keys Multus does not know.
    """

    name: str
    namespace: str
    interface: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    explicit_namespace: bool = field(default=True, compare=False)

    @property
    def fits_comma_form(self) -> bool:
        """True when the comma form can hold every field of this element."""
        return not self.options


def detect_form(value: str) -> Form:
    """The form Multus reads `value` in: JSON when it contains `[`, `{` or `"`."""
    return "json" if _JSON_MARKERS.intersection(value) else "comma"


def parse_network_selections(value: str, pod_namespace: str) -> list[NetworkSelection]:
    """Parse a `k8s.v1.cni.cncf.io/networks` value; raise ValueError naming the bad item."""
    if not value.strip():
        raise ValueError(
            f"networks annotation is empty; expected {COMMA_FORM_EXAMPLE}, or a JSON list such as "
            f"{JSON_FORM_EXAMPLE}"
        )
    if detect_form(value) == "json":
        return _parse_json_form(value, pod_namespace)
    return [_parse_comma_item(item.strip(), pod_namespace) for item in value.split(",")]


def _parse_comma_item(item: str, pod_namespace: str) -> NetworkSelection:
    slash_items = item.split("/")
    if len(slash_items) > 2:
        raise ValueError(f'network "{item}" has more than one "/"; expected [namespace/]name[@interface]')
    namespace = slash_items[0].strip() if len(slash_items) == 2 else ""
    at_items = slash_items[-1].split("@")
    if len(at_items) > 2:
        raise ValueError(f'network "{item}" has more than one "@"; expected [namespace/]name[@interface]')
    name = at_items[0].strip()
    interface = at_items[1].strip() if len(at_items) == 2 else ""
    if not name:
        raise ValueError(
            f'network "{item}" has no name; expected [namespace/]name[@interface] (is there a stray comma?)'
        )
    for part, what in ((namespace, "namespace"), (name, "name")):
        if part and not is_dns1123_label(part):
            raise ValueError(
                f'network "{item}": {what} "{part}" is not a DNS-1123 label (lower case '
                "letters, digits and '-', starting and ending with a letter or digit, "
                "at most 63 characters)"
            )
    if interface:
        _check_interface(item, interface)
    return NetworkSelection(
        name=name,
        namespace=namespace or pod_namespace,
        interface=interface or None,
        explicit_namespace=bool(namespace),
    )


def _check_interface(item: str, interface: str) -> None:
    problem = interface_name_problem(interface)
    if problem:
        raise ValueError(
            f'network "{item}": interface name "{interface}" {problem}; use a name of at most '
            "15 bytes without whitespace, '/' or ':', such as net1"
        )


def _parse_json_form(value: str, pod_namespace: str) -> list[NetworkSelection]:
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError) as err:
        raise ValueError(
            f"networks annotation is not valid JSON ({_short(err)}); expected a JSON list "
            f"such as {JSON_FORM_EXAMPLE}, or the comma form ({COMMA_FORM_EXAMPLE})"
        ) from None
    if decoded is None:
        return []
    if isinstance(decoded, dict):
        raise ValueError(
            "networks annotation is a single JSON object; Multus needs a JSON list: wrap it "
            f"in [ ], e.g. {JSON_FORM_EXAMPLE}"
        )
    if not isinstance(decoded, list):
        raise ValueError(
            f"networks annotation is a JSON {json_type_name(decoded)}; expected a JSON list such as "
            f"{JSON_FORM_EXAMPLE}"
        )
    return [
        parse_selection_element(element, f"networks[{index}]", pod_namespace)
        for index, element in enumerate(decoded)
    ]


def parse_selection_element(element: object, where: str, default_namespace: str) -> NetworkSelection:
    """Parse one JSON NetworkSelectionElement; `where` names it in errors."""
    if element is None:
        # Go unmarshals null into a nil *NetworkSelectionElement and Multus then panics.
        raise ValueError(f"{where} is null; expected an object such as {JSON_FORM_EXAMPLE[1:-1]}")
    if not isinstance(element, dict):
        raise ValueError(
            f"{where} is a JSON {json_type_name(element)}; expected an object such as "
            f"{JSON_FORM_EXAMPLE[1:-1]}"
        )
    fields = _canonical_keys(element)
    name = _string_field(where, fields, "name")
    namespace = _string_field(where, fields, "namespace")
    interface = _string_field(where, fields, "interface")
    deprecated_interface = _string_field(where, fields, "interfaceRequest")
    if not name:
        raise ValueError(f'{where} has no "name"; every element must name a NAD')
    if not is_dns1123_subdomain(name):
        raise ValueError(
            f'{where}.name "{name}" is not a valid object name (DNS-1123 subdomain: lower case '
            "letters, digits, '-' and '.')"
        )
    if namespace and not is_dns1123_label(namespace):
        raise ValueError(f'{where}.namespace "{namespace}" is not a DNS-1123 label')
    # Multus: `interfaceRequest` is honoured only when `interface` is empty (pre-v3.2 spelling).
    chosen_interface = interface or deprecated_interface
    if chosen_interface:
        _check_interface(f"{where} ({name})", chosen_interface)
    _check_mac(where, fields, "mac", "a MAC address such as 02:00:00:00:00:01")
    _check_mac(where, fields, "infiniband-guid", "a GUID such as c2:11:22:33:44:55:66:77")
    _check_ips(where, fields)
    options = {k: v for k, v in fields.items() if k not in {"name", "namespace", "interface"}}
    if not interface:
        # The pre-v3.2 spelling is honoured only when `interface` is empty; it is written
        # back as `interface`. When both are set Multus ignores it, and so it is kept as is.
        options.pop("interfaceRequest", None)
    return NetworkSelection(
        name=name,
        namespace=namespace or default_namespace,
        interface=chosen_interface or None,
        options=options,
        explicit_namespace=bool(namespace),
    )


def _canonical_keys(element: Mapping[str, Any]) -> dict[str, Any]:
    """Keys as Go's encoding/json matches them: exact first, then case-insensitively."""
    result: dict[str, Any] = {}
    exact = {key for key in element if key in _KNOWN_KEYS}
    for key, value in element.items():
        canonical = key if key in exact else _KEY_BY_FOLDED.get(key.casefold())
        if canonical is None:
            result[key] = value
        elif key == canonical or canonical not in exact:
            result[canonical] = value
    return result


def _string_field(where: str, fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key} is a JSON {json_type_name(value)}; expected a string")
    return value


def _check_mac(where: str, fields: Mapping[str, Any], key: str, example: str) -> None:
    value = _string_field(where, fields, key)
    if value and not is_hardware_address(value):
        raise ValueError(f'{where}.{key} "{value}" is not {example}')


def _check_ips(where: str, fields: Mapping[str, Any]) -> None:
    ips = fields.get("ips")
    if ips is None:
        return
    if not isinstance(ips, list):
        raise ValueError(f"{where}.ips is a JSON {json_type_name(ips)}; expected a list of IPs or CIDRs")
    for ip in ips:
        if not isinstance(ip, str) or not is_ip_or_cidr(ip):
            raise ValueError(
                f"{where}.ips entry {json.dumps(ip)} is not an IP address or CIDR "
                "(e.g. 10.10.1.5 or 10.10.1.5/24)"
            )


def is_hardware_address(value: str) -> bool:
    """True for what Go's net.ParseMAC accepts: EUI-48, EUI-64 and 20-octet InfiniBand."""
    if _COLON_MAC.fullmatch(value):
        octets = (len(value) + 1) // 3
    elif _DOTTED_MAC.fullmatch(value):
        octets = (len(value) + 1) // 5 * 2
    else:
        return False
    return octets in _MAC_OCTETS


def is_ip_or_cidr(value: str) -> bool:
    """True for an IP address, or an address with a prefix length (host bits allowed)."""
    try:
        if "/" in value:
            ipaddress.ip_interface(value)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def format_network_selections(selections: Sequence[NetworkSelection], form: Form) -> str:
    """The annotation value for `selections`: comma form when asked and possible, else JSON."""
    if form == "comma" and all(s.fits_comma_form for s in selections) and selections:
        return ",".join(_comma_item(s) for s in selections)
    return json.dumps([_json_element(s) for s in selections], separators=(",", ":"))


def _comma_item(selection: NetworkSelection) -> str:
    text = selection.name
    if selection.explicit_namespace:
        text = f"{selection.namespace}/{text}"
    if selection.interface:
        text = f"{text}@{selection.interface}"
    return text


def _json_element(selection: NetworkSelection) -> dict[str, Any]:
    element: dict[str, Any] = {"name": selection.name}
    if selection.explicit_namespace:
        element["namespace"] = selection.namespace
    if selection.interface:
        element["interface"] = selection.interface
    element.update(selection.options)
    return element


def interface_names(selections: Iterable[NetworkSelection]) -> list[str]:
    """The interface name each selection gets in the Pod, in order.

    Multus numbers secondaries by position (`net1` for the first element, `net2` for the
    second, ...) and uses an explicit name where one is given, whatever its position.
    """
    return [s.interface or f"net{position}" for position, s in enumerate(selections, start=1)]


def duplicate_interfaces(selections: Sequence[NetworkSelection]) -> list[str]:
    """Interface names that more than one selection would get, in first-seen order."""
    seen: set[str] = set()
    duplicates: list[str] = []
    for name in interface_names(selections):
        if name in seen and name not in duplicates:
            duplicates.append(name)
        seen.add(name)
    return duplicates


def parse_default_network(value: str) -> NetworkSelection:
    """Parse `v1.multus-cni.io/default-network`: exactly one element, default namespace kube-system."""
    selections = parse_network_selections(value, MULTUS_NAMESPACE)
    if len(selections) != 1:
        raise ValueError(
            f"default network annotation names {len(selections)} networks; Multus accepts exactly one"
        )
    return selections[0]


@dataclass(frozen=True)
class AttachedNetwork:
    """One entry of `k8s.v1.cni.cncf.io/network-status`, as Multus reports it."""

    name: str
    interface: str
    ips: tuple[str, ...]
    default: bool
    mac: str = ""  # the interface's MAC; with ipvlan its master's, so it names the ENI


def parse_network_status(value: str) -> list[AttachedNetwork]:
    """Parse `k8s.v1.cni.cncf.io/network-status`; its IPs come without prefix length."""
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"network-status is not valid JSON ({_short(err)})") from None
    if not isinstance(decoded, list):
        raise ValueError(f"network-status is a JSON {json_type_name(decoded)}; expected a list")
    result: list[AttachedNetwork] = []
    for index, entry in enumerate(decoded):
        if not isinstance(entry, dict):
            raise ValueError(f"network-status[{index}] is a JSON {json_type_name(entry)}; expected an object")
        ips = entry.get("ips") or []
        if not isinstance(ips, list) or not all(isinstance(ip, str) and is_ip_or_cidr(ip) for ip in ips):
            raise ValueError(f"network-status[{index}].ips must be a list of IP addresses")
        name, interface = entry.get("name", ""), entry.get("interface", "")
        if not isinstance(name, str) or not isinstance(interface, str):
            raise ValueError(f"network-status[{index}] name and interface must be strings")
        mac = entry.get("mac")
        result.append(
            AttachedNetwork(
                name,
                interface,
                tuple(ips),
                entry.get("default") is True,
                mac.lower() if isinstance(mac, str) and is_hardware_address(mac) else "",
            )
        )
    return result


def _short(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."
