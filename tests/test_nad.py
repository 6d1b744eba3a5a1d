"""NetworkAttachmentDefinition configs: parsing, VPC CNI detection, CIDRs and ports."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import load_yaml, nad
from webhook.decisions.allocation import (
    annotation_mismatch,
    eni_secondary_ips,
    find_overlaps,
    host_local_pools,
    reserved_in_pools,
)
from webhook.multus.ipam import PortRange, collapse, ipam_cidrs, ipam_pools, parse_cidr_list, parse_ports
from webhook.multus.nad import parse_cni_config, parse_network_attachment

CONFIGS = load_yaml("nad-configs.yaml")


@pytest.mark.parametrize("case", CONFIGS, ids=lambda c: c["name"])
def test_real_configs_yield_their_cidrs(case: dict[str, Any]) -> None:
    parsed = parse_network_attachment(nad("n", "ns", case["config"], case.get("annotations")))
    assert parsed.config_error is None
    assert list(parsed.types) == case["types"]
    if "cidrs" in case:
        assert [str(c) for c in parsed.addressing.cidrs] == case["cidrs"]
    else:
        assert not parsed.addressing.known
        assert case["unknown"] in str(parsed.addressing.unknown_reason)
        assert "multihome.io/cidrs" in str(parsed.addressing.unknown_reason)


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON list"),
        ('"ipvlan"', "JSON string"),
        ('{"cniVersion": "0.4.0", "master": "eth1"}', 'no "type"'),
        ('{"type": ""}', 'no "type"'),
        ('{"plugins": {"type": "ipvlan"}}', '"plugins" is a JSON object'),
        ('{"plugins": []}', "empty"),
        ('{"plugins": [{"type": "ipvlan"}, 7]}', "plugins[1] is a JSON number"),
        ('{"plugins": [{"type": "ipvlan"}, {"mtu": 9001}]}', 'plugins[1] has no "type"'),
    ],
)
def test_broken_configs_are_named_precisely(config: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_cni_config(config)
    assert says in str(caught.value)
    assert parse_network_attachment(nad("n", "ns", config)).config_error == str(caught.value)


@pytest.mark.parametrize(
    ("name", "config", "vpc"),
    [
        ("secondary", '{"type": "aws-cni"}', ("aws-cni",)),
        ("secondary", '{"plugins": [{"type": "ipvlan"}, {"type": "egress-v6-cni"}]}', ("egress-v6-cni",)),
        (
            "secondary",
            '{"plugins": [{"type": "egress-cni"}, {"type": "egress-v4-cni"}]}',
            ("egress-cni", "egress-v4-cni"),
        ),
        ("aws-cni", None, ("aws-cni",)),  # empty spec: Multus loads the on-disk config of that name
        ("aws-cni", "", ("aws-cni",)),
        ("egress-v4-cni", "  ", ("egress-v4-cni",)),
        ("ipvlan-dp", None, ()),
        ("aws-cni", '{"type": "ipvlan"}', ()),  # the name does not matter when the config says otherwise
    ],
)
def test_the_vpc_cni_is_found_in_type_plugins_and_empty_specs(
    name: str, config: str | None, vpc: tuple[str, ...]
) -> None:
    assert parse_network_attachment(nad(name, "kube-system", config)).vpc_cni_types == vpc


def test_unsupported_types_are_listed() -> None:
    parsed = parse_network_attachment(
        nad("n", "ns", '{"plugins": [{"type": "sriov"}, {"type": "macvlan"}, {"type": "tuning"}]}')
    )
    assert parsed.unsupported_types == ("sriov", "macvlan")


@pytest.mark.parametrize(
    ("ipam", "says"),
    [
        ({"type": "host-local", "subnet": "10.0.0.0/33"}, 'ipam.subnet "10.0.0.0/33" is not a CIDR'),
        ({"type": "host-local", "subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}, "outside 10.0.0.0/24"),
        (
            {
                "type": "host-local",
                "ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.2"}]],
            },
            "after range end",
        ),
        ({"type": "host-local", "ranges": {"subnet": "10.0.0.0/24"}}, "ipam.ranges is a JSON object"),
        ({"type": "whereabouts", "range": 42}, "ipam.range is a JSON number"),
        ({"type": "whereabouts", "range": "10.0.0.0/24", "exclude": ["bad"]}, "exclude"),
        ({"type": "static", "addresses": [{"gateway": "10.0.0.1"}]}, "addresses[0].address is missing"),
    ],
)
def test_broken_ipam_is_an_error_naming_the_field(ipam: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        ipam_cidrs({"type": "ipvlan", "ipam": ipam})
    assert says in str(caught.value)


def test_ipam_beats_the_annotation() -> None:
    config = '{"type": "ipvlan", "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}'
    parsed = parse_network_attachment(nad("n", "ns", config, {"multihome.io/cidrs": "192.168.0.0/16"}))
    assert parsed.addressing.source == "ipam"
    assert [str(c) for c in parsed.addressing.cidrs] == ["10.0.0.0/24"]


def test_a_bad_cidrs_annotation_is_an_error() -> None:
    with pytest.raises(ValueError, match=r'"10\.0\.0\.0/40" is not a CIDR'):
        parse_cidr_list("10.0.0.0/24, 10.0.0.0/40")
    parsed = parse_network_attachment(
        nad("n", "ns", '{"type": "host-device"}', {"multihome.io/cidrs": "nope"})
    )
    assert parsed.addressing.error is not None


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        (
            "TCP/2152, UDP/8805, TCP/30000-30100",
            [PortRange("TCP", 2152), PortRange("TCP", 30000, 30100), PortRange("UDP", 8805)],
        ),
        ("sctp/38412", [PortRange("SCTP", 38412)]),
        ("UDP/53,UDP/53, ", [PortRange("UDP", 53)]),
        ("TCP/80-80", [PortRange("TCP", 80)]),
        ("", []),
    ],
)
def test_ports_annotation(text: str, ports: list[PortRange]) -> None:
    assert list(parse_ports(text)) == ports


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2152", "protocol must be TCP, UDP or SCTP"),
        ("ICMP/1", "protocol must be TCP, UDP or SCTP"),
        ("TCP/0", "not a port number"),
        ("TCP/65536", "not a port number"),
        ("TCP/http", "not a port number"),
        ("TCP/100-90", "ends (90) before it starts (100)"),
        ("UDP/" + "9" * 5000, "not a port number"),
    ],
)
def test_bad_ports_say_the_expected_form(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_ports(text)
    assert says in str(caught.value)
    assert "TCP/2152" in str(caught.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_ipam_keys = st.sampled_from(
    [
        "type",
        "subnet",
        "ranges",
        "range",
        "range_start",
        "range_end",
        "exclude",
        "ipRanges",
        "addresses",
        "rangeStart",
        "rangeEnd",
        "gateway",
        "exclude_gateway",
        "enable_overlapping_ranges",
        "network_name",
        "dataDir",
    ]
)


@given(
    st.dictionaries(
        _ipam_keys,
        _json
        | st.sampled_from(
            ["10.0.0.0/24", "10.0.0.5", "host-local", "whereabouts", "static", "10.0.0.1-10.0.0.9/24"]
        ),
    )
)
def test_garbage_ipam_yields_cidrs_or_value_error(ipam: dict[str, Any]) -> None:
    try:
        cidrs = ipam_cidrs({"type": "ipvlan", "ipam": ipam})
    except ValueError:
        return
    assert all(isinstance(c, (ipaddress.IPv4Network, ipaddress.IPv6Network)) for c in cidrs)
    try:
        pools = ipam_pools({"type": "ipvlan", "ipam": ipam})
    except ValueError:
        return
    for pool in pools:
        assert all(first <= last for first, last in pool.spans) and pool.size >= 0
    # The allocation checks take whatever parses: a NAD of these pools beside a copy of itself.
    config = json.dumps({"type": "ipvlan", "ipam": ipam})
    a, b = (parse_network_attachment(nad(name, "ns", config)) for name in ("a", "b"))
    for overlap in find_overlaps([a, b]):
        assert {overlap.first.name, overlap.second.name} == {"a", "b"} and overlap.size >= 1
    assert all(r.message() and r.fix() for r in reserved_in_pools(a))
    assert all(pool.where and pool.subnet for pool in host_local_pools(a))
    assert isinstance(eni_secondary_ips(a), str | None)
    assert annotation_mismatch(a) is None  # no multihome.io/cidrs annotation to disagree with


@given(_json, st.text(max_size=12))
def test_any_nad_object_parses_without_raising(spec: object, name: str) -> None:
    config = json.dumps(spec) if not isinstance(spec, str) else spec
    parsed = parse_network_attachment(
        {"metadata": {"name": name, "annotations": {"multihome.io/ports": name}}, "spec": {"config": config}}
    )
    assert parsed.name == name
    # A config is read, or refused in words: never both, and never neither when one was given.
    assert (parsed.config is None) == bool(parsed.config_error) or (parsed.config is None and parsed.on_disk)
    assert parsed.ports_error is None or parsed.ports == ()
    odd = parse_network_attachment({"metadata": name, "spec": spec})
    assert odd.config is None or isinstance(odd.config, dict)


@given(st.text())
def test_ports_parse_and_round_trip_or_raise_value_error(text: str) -> None:
    try:
        ports = parse_ports(text)
    except ValueError as err:
        reason = str(err)
    else:
        for port in ports:
            assert port.protocol in ("TCP", "UDP", "SCTP") and 1 <= port.port <= 65535
            assert port.end_port is None or port.port < port.end_port <= 65535
        assert parse_ports(", ".join(map(str, ports))) == ports
        return
    assert reason.strip(), f"{text!r}: refused without a reason"


_v4 = st.builds(
    lambda a, p: ipaddress.ip_network((a, p), strict=False), st.integers(0, 2**32 - 1), st.integers(0, 32)
)
_v6 = st.builds(
    lambda a, p: ipaddress.ip_network((a, p), strict=False), st.integers(0, 2**128 - 1), st.integers(96, 128)
)


@given(st.lists(_v4 | _v6, max_size=30))
def test_collapse_agrees_with_the_standard_library(cidrs: list[Any]) -> None:
    v4 = [c for c in cidrs if c.version == 4]
    v6 = [c for c in cidrs if c.version == 6]
    assert collapse(cidrs) == [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
