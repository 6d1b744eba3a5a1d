"""IP address safety: the tables of tests/fixtures/ip-safety.yaml through the audit, and the
overlap sweep against a brute-force check on small random pools."""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.audit import audit
from tests.support import load_yaml, nad, namespace, rule
from webhook.cluster.files import FileState
from webhook.decisions.allocation import PoolBounds, PoolBoundsCache, find_overlaps, overlaps_with
from webhook.decisions.explain import explain_pod
from webhook.multus.ipam import Pool
from webhook.multus.nad import NetworkAttachment, parse_network_attachment

CASES: list[dict[str, Any]] = load_yaml("ip-safety.yaml")


def manifests(case: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        nad(item["name"], item["namespace"], json.dumps(item["config"]), item.get("annotations"))
        for item in case["nads"]
    ]


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_ip_safety_findings(case: dict[str, Any]) -> None:
    state = FileState(("fixture", doc) for doc in manifests(case))
    found = [f for f in audit(state) if f.check >= "MH050"]
    assert sorted({(f.check, f"{f.namespace}/{f.name}") for f in found}) == sorted(
        {(check, ref) for check, ref, _ in case["expect"]}
    )
    for check, ref, words in case["expect"]:
        messages = [f.message for f in found if (f.check, f"{f.namespace}/{f.name}") == (check, ref)]
        assert any(words in m for m in messages), f"{check} {ref}: {words!r} not in {messages}"


def test_admission_names_only_the_new_nads_overlaps() -> None:
    case = next(c for c in CASES if c["case"].startswith("whereabouts with overlap protection off"))
    first, *others = [parse_network_attachment(doc) for doc in manifests(case)]
    assert sorted(o.other(first).ref for o in overlaps_with(first, others)) == [
        "team-b/signal-b",
        "team-c/signal-c",
    ]
    assert [o.other(others[0]).ref for o in overlaps_with(others[0], [first, *others])] == ["team-a/signal-a"]


# --- the sweep against brute force -------------------------------------------------------------

spans = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 12)).map(lambda t: (t[0], t[0] + t[1])),
    min_size=1,
    max_size=3,
)
pools = st.tuples(st.sampled_from([4, 6]), spans, st.sampled_from([None, "whereabouts:", "host-local:x"]))


def attachment(
    index: int, version: int, items: list[tuple[int, int]], store: str | None
) -> NetworkAttachment:
    pool = Pool("ipam", "whereabouts", version, tuple(sorted(items)), store=store)
    return NetworkAttachment(namespace="ns", name=f"n{index}", pools=(pool,))


def addresses(n: NetworkAttachment) -> set[tuple[int, int]]:
    return {(p.version, a) for p in n.pools for first, last in p.spans for a in range(first, last + 1)}


@settings(max_examples=300, deadline=None)
@given(st.lists(pools, min_size=2, max_size=8))
def test_the_sweep_finds_what_brute_force_finds(
    drawn: list[tuple[int, list[tuple[int, int]], str | None]],
) -> None:
    nads = [attachment(i, version, items, store) for i, (version, items, store) in enumerate(drawn)]
    expected = {}
    for a, b in combinations(nads, 2):
        if a.pools[0].store is not None and a.pools[0].store == b.pools[0].store:
            continue
        shared = addresses(a) & addresses(b)
        if shared:
            expected[(a.name, b.name)] = shared
    found = {}
    for overlap in find_overlaps(nads):
        found[(overlap.first.name, overlap.second.name)] = {
            (overlap.version, x) for first, last in overlap.spans for x in range(first, last + 1)
        }
    assert found == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(pools, min_size=1, max_size=2), min_size=2, max_size=8))
def test_admitting_one_nad_finds_what_the_whole_sweep_finds_for_it(
    drawn: list[list[tuple[int, list[tuple[int, int]], str | None]]],
) -> None:
    # NADs of one or two pools, of either IP version: the bounds that pick the candidates
    # must never leave out a NAD the exact sweep over all of them pairs with the new one.
    nads = [
        NetworkAttachment(
            namespace="ns",
            name=f"n{i}",
            pools=tuple(
                Pool("ipam", "whereabouts", v, tuple(sorted(items)), store=s) for v, items, s in each
            ),
        )
        for i, each in enumerate(drawn)
    ]
    new, others = nads[0], nads[1:]

    def described(overlaps: list[Any]) -> set[tuple[str, int, tuple[tuple[int, int], ...]]]:
        return {(o.other(new).name, o.version, o.spans) for o in overlaps if new in (o.first, o.second)}

    assert described(overlaps_with(new, others)) == described(find_overlaps(nads))


def test_the_kept_index_follows_the_nads_it_was_built_from() -> None:
    def one(name: str, first: int, last: int) -> NetworkAttachment:
        return NetworkAttachment(
            namespace="ns", name=name, pools=(Pool("ipam", "whereabouts", 4, ((first, last),)),)
        )

    new, a, b = one("new", 15, 35), one("a", 10, 20), one("b", 30, 40)

    def others(index: PoolBounds) -> list[str]:
        return sorted(o.other(new).name for o in overlaps_with(new, index))

    cache = PoolBoundsCache()
    assert others(cache.of([a])) == ["a"]
    assert others(cache.of([a, b])) == ["a", "b"]  # a NAD added
    assert others(cache.of([one("a", 50, 60), b])) == ["b"]  # one changed: a new object
    assert cache.of([a, b]) is cache.of([a, b])  # the same NADs: the same index
    assert PoolBoundsCache().of([a, b]) is not cache.of([a, b])  # each handler keeps its own


def test_a_pool_whose_last_span_is_not_its_highest_still_meets_its_neighbours() -> None:
    # Found by the property above: spans (0, 2) and (1, 1), unmerged, end below their highest.
    new = NetworkAttachment(
        namespace="ns", name="new", pools=(Pool("ipam", "whereabouts", 4, ((0, 2), (1, 1))),)
    )
    other = NetworkAttachment(
        namespace="ns", name="other", pools=(Pool("ipam", "whereabouts", 4, ((2, 2),)),)
    )
    assert [o.other(new).name for o in overlaps_with(new, [other])] == ["other"]


def test_rules_explain_mentions_a_network_nearly_full() -> None:
    small = '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "mode": "l3", "ipam": {"type": "whereabouts", "range": "10.9.9.10-10.9.9.19/24"}}'
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "upf", "namespace": "core"},
        "spec": {"replicas": 9, "template": {"metadata": {"labels": {"app": "upf"}}, "spec": {}}},
    }
    docs = [
        namespace("core", **{"multihome.io/profile": "dataplane"}),
        nad("dp", "kube-system", small),
        rule("dataplane", "dataplane"),
        deployment,
    ]
    state = FileState(("fixture", doc) for doc in docs)
    report = explain_pod(state, "core", {"app": "upf"})
    assert "capacity of kube-system/dp: 9 Pods attach it and its ranges hold 10 addresses (90%)" in report
    state = FileState(("fixture", doc) for doc in docs[:-1])
    assert "capacity of" not in explain_pod(state, "core", {"app": "upf"})
