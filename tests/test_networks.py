"""The networks annotation grammar, against Multus' own cases and generated ones."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import load_yaml
from webhook.multus.networks import (
    NetworkSelection,
    detect_form,
    duplicate_interfaces,
    format_network_selections,
    interface_names,
    is_hardware_address,
    parse_default_network,
    parse_network_selections,
    parse_network_status,
)

CASES = load_yaml("network-annotations.yaml")


def _expected(item: dict[str, Any]) -> NetworkSelection:
    return NetworkSelection(
        name=item["name"],
        namespace=item["namespace"],
        interface=item.get("interface"),
        options=item.get("options", {}),
    )


@pytest.mark.parametrize("case", CASES["valid"], ids=lambda c: c["value"][:40])
def test_valid_values_parse_as_multus_parses_them(case: dict[str, Any]) -> None:
    parsed = parse_network_selections(case["value"], "pod-ns")
    assert parsed == [_expected(item) for item in case["expect"]]


@pytest.mark.parametrize("case", CASES["invalid"], ids=lambda c: c["value"][:40] or "empty")
def test_invalid_values_are_rejected_with_the_reason(case: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_network_selections(case["value"], "pod-ns")
    assert case["says"] in str(caught.value)


def test_an_error_quotes_the_bad_item() -> None:
    with pytest.raises(ValueError, match=r'network "net1@if1@if2"'):
        parse_network_selections("ok-net, net1@if1@if2", "ns")


@pytest.mark.parametrize(
    ("value", "form"),
    [
        ("net1", "comma"),
        ("ns/net1@eth1", "comma"),
        ('[{"name":"n"}]', "json"),
        ('{"name":"n"}', "json"),
        ('"x"', "json"),
    ],
)
def test_the_form_is_chosen_by_brackets_and_quotes(value: str, form: str) -> None:
    assert detect_form(value) == form


def test_implicit_interfaces_are_numbered_by_position() -> None:
    selections = parse_network_selections("a, b@data0, c", "ns")
    assert interface_names(selections) == ["net1", "data0", "net3"]


def test_an_explicit_name_that_matches_a_position_is_a_duplicate() -> None:
    selections = parse_network_selections("a@net2, b", "ns")
    assert duplicate_interfaces(selections) == ["net2"]
    assert duplicate_interfaces(parse_network_selections("a@x, b@y", "ns")) == []


def test_comma_form_is_kept_when_every_element_fits() -> None:
    selections = parse_network_selections("a, other/b@data0", "ns")
    assert format_network_selections(selections, "comma") == "a,other/b@data0"


def test_json_is_written_when_an_element_needs_it() -> None:
    selections = parse_network_selections('[{"name": "a", "mac": "02:00:00:00:00:01"}]', "ns")
    written = format_network_selections(selections, "comma")
    assert json.loads(written) == [{"name": "a", "mac": "02:00:00:00:00:01"}]


def test_unknown_json_keys_survive_a_round_trip() -> None:
    value = '[{"name": "a", "x-note": {"keep": [1, 2]}, "cni-args": {"foo": "bar"}}]'
    written = format_network_selections(parse_network_selections(value, "ns"), "json")
    assert json.loads(written) == [{"name": "a", "x-note": {"keep": [1, 2]}, "cni-args": {"foo": "bar"}}]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("02:00:5e:10:00:00", True),
        ("02-00-5E-10-00-00", True),
        ("0200.5e10.0000", True),
        ("02:00:5e:10:00:00:00:01", True),
        ("00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", True),
        ("02:00:5e:10:00", False),
        ("02:00-5e:10:00:00", False),
        ("0200.5e10", False),
        ("hello", False),
    ],
)
def test_hardware_addresses_as_go_parses_them(value: str, valid: bool) -> None:
    assert is_hardware_address(value) is valid


def test_default_network_takes_one_element_in_kube_system() -> None:
    assert parse_default_network("calico").key == ("kube-system", "calico")
    with pytest.raises(ValueError, match="exactly one"):
        parse_default_network("a,b")


def test_network_status_ips_have_no_prefix() -> None:
    status = parse_network_status(
        '[{"name": "aws-cni", "interface": "eth0", "ips": ["192.168.1.5"], "default": true},'
        ' {"name": "kube-system/dp", "interface": "net1", "ips": ["10.0.4.71"], "mac": "02:00:00:00:00:01"}]'
    )
    assert [(s.name, s.interface, s.ips, s.default) for s in status] == [
        ("aws-cni", "eth0", ("192.168.1.5",), True),
        ("kube-system/dp", "net1", ("10.0.4.71",), False),
    ]
    with pytest.raises(ValueError, match="list"):
        parse_network_status('{"name": "x"}')


def _parses_and_round_trips_or_says_why(value: str) -> None:
    """A value parses to selections that format back to the same selections, or is refused in words."""
    try:
        selections = parse_network_selections(value, "ns")
    except ValueError as err:
        reason = str(err)
    else:
        assert all(s.name and s.namespace for s in selections), selections
        again = parse_network_selections(format_network_selections(selections, detect_form(value)), "ns")
        assert again == selections
        return
    assert reason.strip(), f"{value!r}: refused without a reason"


@given(st.text())
def test_any_text_parses_and_round_trips_or_raises_value_error(value: str) -> None:
    _parses_and_round_trips_or_says_why(value)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_parses_and_round_trips_or_raises_value_error(value: object) -> None:
    _parses_and_round_trips_or_says_why(json.dumps(value))


_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
_interface = st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=15).filter(
    lambda s: s not in {".", ".."}
)
_selection = st.builds(
    NetworkSelection,
    name=_label,
    namespace=_label,
    interface=st.none() | _interface,
    options=st.just({}) | st.fixed_dictionaries({"mac": st.just("02:00:00:00:00:01")}),
    explicit_namespace=st.booleans(),
)


@given(st.lists(_selection, min_size=1, max_size=6), st.sampled_from(["comma", "json"]))
def test_valid_selections_round_trip_through_both_forms(
    selections: list[NetworkSelection], form: Any
) -> None:
    pod_namespace = "pod-ns"
    resolved = [
        s if s.explicit_namespace else NetworkSelection(s.name, pod_namespace, s.interface, s.options, False)
        for s in selections
    ]
    written = format_network_selections(resolved, form)
    assert parse_network_selections(written, pod_namespace) == resolved
