"""Enrich: NetworkPolicies get the secondary networks' CIDRs and ports (tests/fixtures/cluster)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from policies.enrich import NetworkPolicyEnricher, companion_policy, digest, enrich_policy, remove_enrichment
from tests.support import CLUSTER, make_request, nad, namespace
from tests.support import pod as pod_manifest
from webhook.admission.review import apply_decision
from webhook.cli.main import main
from webhook.cluster.files import FileState
from webhook.decisions.policy import AdmissionPolicy

UPF = {"matchLabels": {"app": "upf"}}
DP, SIGNAL, EDGE_LOCAL = "10.0.4.0/24", "10.10.1.0/24", "10.0.8.0/24"


def policy(
    namespace: str, spec: dict[str, Any], name: str = "p", annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def blocks(*cidrs: str) -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": c}} for c in cidrs]


# (case, policy, expected spec after enrichment (None: unchanged), warning fragment)
CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, str | None]] = [
    (
        "ingress from a podSelector, plus the port rule of the selected Pods' network",
        policy(
            "core",
            {
                "podSelector": UPF,
                "ingress": [{"from": [{"podSelector": UPF}], "ports": [{"protocol": "TCP", "port": 80}]}],
            },
        ),
        {
            "podSelector": UPF,
            "ingress": [
                {
                    "from": [{"podSelector": UPF}, *blocks(DP, SIGNAL)],
                    "ports": [{"protocol": "TCP", "port": 80}],
                },
                {"from": blocks(DP), "ports": [{"protocol": "UDP", "port": 2152}]},
            ],
        },
        None,
    ),
    (
        "egress to every namespace names the network it cannot enrich for",
        policy(
            "edge",
            {
                "podSelector": {"matchLabels": {"role": "batch"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {}}]}],
            },
        ),
        {
            "podSelector": {"matchLabels": {"role": "batch"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {}}, *blocks(DP, EDGE_LOCAL, SIGNAL)]}],
        },
        "not enriched for network kube-system/vpc-again: the config has no IPAM section",
    ),
    (
        "namespaceSelector and podSelector together",
        policy(
            "core",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {"matchLabels": {"region": "eu"}},
                                "podSelector": {"matchLabels": {"role": "batch"}},
                            }
                        ]
                    }
                ],
            },
        ),
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {"matchLabels": {"region": "eu"}},
                            "podSelector": {"matchLabels": {"role": "batch"}},
                        },
                        *blocks(EDGE_LOCAL),
                    ]
                },
                {"to": blocks(DP), "ports": [{"protocol": "UDP", "port": 2152}]},
            ],
        },
        None,
    ),
    (
        "ipBlock peers are left as they are",
        policy(
            "edge",
            {
                "podSelector": {"matchLabels": {"nobody": "x"}},
                "ingress": [{"from": blocks("192.168.0.0/16")}],
            },
        ),
        None,
        None,
    ),
    (
        "a CIDR already present is not added twice",
        policy(
            "core",
            {
                "podSelector": {"matchLabels": {"nobody": "x"}},
                "ingress": [{"from": [{"podSelector": UPF}, *blocks(DP)]}],
            },
        ),
        {
            "podSelector": {"matchLabels": {"nobody": "x"}},
            "ingress": [{"from": [{"podSelector": UPF}, *blocks(DP, SIGNAL)]}],
        },
        None,
    ),
    (
        "an empty from admits everyone already; ports still get their rule",
        policy("core", {"podSelector": UPF, "ingress": [{"ports": [{"protocol": "TCP", "port": 443}]}]}),
        {
            "podSelector": UPF,
            "ingress": [
                {"ports": [{"protocol": "TCP", "port": 443}]},
                {"from": blocks(DP), "ports": [{"protocol": "UDP", "port": 2152}]},
            ],
        },
        None,
    ),
    (
        "default deny in both directions gets the port rule both ways",
        policy("core", {"podSelector": UPF, "policyTypes": ["Ingress", "Egress"]}),
        {
            "podSelector": UPF,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": blocks(DP), "ports": [{"protocol": "UDP", "port": 2152}]}],
            "egress": [{"to": blocks(DP), "ports": [{"protocol": "UDP", "port": 2152}]}],
        },
        None,
    ),
    (
        "ingress rules of a policy that governs only egress are not touched",
        policy(
            "core",
            {
                "podSelector": {"matchLabels": {"nobody": "x"}},
                "policyTypes": ["Egress"],
                "ingress": [{"from": [{"podSelector": UPF}]}],
            },
        ),
        None,
        None,
    ),
    (
        "a policy selecting no multi-homed Pods",
        policy(
            "plain",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            },
        ),
        None,
        None,
    ),
    (
        "opt-out",
        policy(
            "core",
            {"podSelector": UPF, "ingress": [{"from": [{"podSelector": UPF}]}]},
            annotations={"multihome.io/enrich": "false"},
        ),
        None,
        None,
    ),
]


@pytest.mark.parametrize(("case", "original", "spec", "warning"), CASES, ids=[c[0] for c in CASES])
def test_enrich(
    cluster: FileState, case: str, original: dict[str, Any], spec: dict[str, Any] | None, warning: str | None
) -> None:
    before = copy.deepcopy(original)
    enrichment = enrich_policy(original, cluster)
    assert original == before, "enrich_policy must not change its input"
    result = enrichment.policy
    if spec is None:
        assert result == original
        assert enrichment.record is None
    else:
        assert result["spec"] == spec
        assert enrichment.record is not None
        kubernetes_validate.validate(result, "1.30", strict=True)
    if warning is None:
        assert enrichment.warnings == []
    else:
        assert any(warning in w for w in enrichment.warnings), enrichment.warnings
    assert enrich_policy(result, cluster).policy == result, "enriching twice must change nothing"
    restored, warnings = remove_enrichment(result)
    assert restored == original and warnings == []


def test_re_enrichment_follows_a_nad_whose_range_changed(cluster: FileState, tmp_path: Path) -> None:
    original = policy(
        "core",
        {"podSelector": {"matchLabels": {"nobody": "x"}}, "ingress": [{"from": [{"podSelector": UPF}]}]},
    )
    first = enrich_policy(original, cluster).policy
    for source in CLUSTER.iterdir():
        (tmp_path / source.name).write_text(source.read_text().replace("10.0.4.0/24", "10.0.40.0/22"))
    moved = FileState.from_directory(tmp_path)
    second = enrich_policy(first, moved).policy
    assert second["spec"]["ingress"][0]["from"] == [{"podSelector": UPF}, *blocks("10.0.40.0/22", SIGNAL)]
    assert remove_enrichment(second)[0] == original


def test_ipv6_and_port_ranges() -> None:
    config = '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.5.0.0/24"}], [{"subnet": "2600:1f14:5::/64"}]]}}'
    state = FileState(
        [
            ("ns", {"kind": "Namespace", "metadata": {"name": "v6"}}),
            ("nad", nad("dual", "v6", config, {"multihome.io/ports": "TCP/30000-30100"})),
            (
                "pod",
                {
                    "kind": "Pod",
                    "metadata": {
                        "name": "a",
                        "namespace": "v6",
                        "labels": {"app": "a"},
                        "annotations": {"k8s.v1.cni.cncf.io/networks": "dual"},
                    },
                },
            ),
        ]
    )
    result = enrich_policy(
        policy("v6", {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]}), state
    ).policy
    assert result["spec"]["ingress"] == [
        {
            "from": blocks("10.5.0.0/24", "2600:1f14:5::/64"),
            "ports": [{"protocol": "TCP", "port": 30000, "endPort": 30100}],
        }
    ]
    kubernetes_validate.validate(result, "1.30", strict=True)


def test_a_record_edited_by_hand_is_dropped_with_a_warning() -> None:
    damaged = policy("core", {"podSelector": {}}, annotations={"multihome.io/enrichment": "{not json"})
    restored, warnings = remove_enrichment(damaged)
    assert (
        "annotations" not in restored["metadata"]
        or "multihome.io/enrichment" not in restored["metadata"]["annotations"]
    )
    assert "was dropped" in warnings[0]


def test_the_companion_multinetworkpolicy(cluster: FileState) -> None:
    original = policy("core", {"podSelector": UPF, "ingress": [{"from": [{"podSelector": UPF}]}]})
    original["metadata"]["uid"] = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    companion = companion_policy(enrich_policy(original, cluster), original)
    assert companion is not None
    assert companion["kind"] == "MultiNetworkPolicy"
    assert companion["metadata"]["annotations"] == {
        "k8s.v1.cni.cncf.io/policy-for": "kube-system/dp,kube-system/signal"
    }
    assert companion["metadata"]["ownerReferences"][0]["uid"] == original["metadata"]["uid"]
    port_rule = {"from": blocks(DP), "ports": [{"protocol": "UDP", "port": 2152}]}
    assert companion["spec"] == {**original["spec"], "ingress": [*original["spec"]["ingress"], port_rule]}, (
        "the intent without the ipBlock peers, and the secondary network's own ports"
    )


def test_the_companion_keeps_every_port_a_network_declares() -> None:
    vxlan = nad(
        "vx",
        "core",
        '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "ipam": {"type": "whereabouts", "range": "10.0.4.0/24"}}',
    )
    vxlan["metadata"]["annotations"] = {"multihome.io/ports": "UDP/4789, TCP/8080"}
    docs = [
        namespace("core"),
        vxlan,
        pod_manifest(
            "core", name="u", labels={"app": "upf"}, annotations={"k8s.v1.cni.cncf.io/networks": "vx"}
        ),
    ]
    state = FileState((f"s:{i}", d) for i, d in enumerate(docs))
    original = policy(
        "core",
        {
            "podSelector": UPF,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": UPF}], "ports": [{"protocol": "UDP", "port": 4789}]}],
        },
    )
    companion = companion_policy(enrich_policy(original, state), original)
    assert companion is not None
    ports = [p for rule in companion["spec"]["ingress"] for p in rule.get("ports", [])]
    assert ports == [
        {"protocol": "UDP", "port": 4789},
        {"protocol": "TCP", "port": 8080},
        {"protocol": "UDP", "port": 4789},
    ]


def test_the_admission_endpoint_patches_policies(cluster: FileState) -> None:
    original = policy("core", {"podSelector": UPF, "ingress": [{"from": [{"podSelector": UPF}]}]})
    for operation in ("CREATE", "UPDATE"):
        decision = NetworkPolicyEnricher()(
            make_request(original, operation=operation, old=original), cluster, AdmissionPolicy()
        )
        assert apply_decision(original, decision) == enrich_policy(original, cluster).policy
    assert not NetworkPolicyEnricher()(
        make_request(None, kind="NetworkPolicy", operation="DELETE", old=original), cluster, AdmissionPolicy()
    ).patch
    ignored = policy("legacy", original["spec"])
    assert not NetworkPolicyEnricher()(make_request(ignored), cluster, AdmissionPolicy()).patch


COMMENTED = """\
# Team core's policies. Reviewed by @netsec.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: upf-ingress   # keep this name: dashboards use it
  namespace: core
spec:
  podSelector:
    matchLabels: {app: upf}
  ingress:
    - from:
        - podSelector:
            matchLabels: {app: upf}   # upf to upf only
---
apiVersion: v1
kind: ConfigMap
metadata: {name: untouched}
data: {a: "1"}
"""


def test_enrich_in_place_keeps_comments_and_removal_restores_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "policies.yaml"
    manifest.write_text(COMMENTED)
    assert main(["enrich", "-i", "--state", str(CLUSTER), str(manifest)]) == 0
    enriched = manifest.read_text()
    for comment in (
        "# Team core's policies. Reviewed by @netsec.",
        "# keep this name: dashboards use it",
        "# upf to upf only",
    ):
        assert comment in enriched
    assert "cidr: 10.0.4.0/24" in enriched
    assert "multihome.io/enrichment" in enriched
    assert "1 of 1 NetworkPolicy enriched" in capsys.readouterr().err
    assert main(["enrich", "-i", "--remove", str(manifest)]) == 0
    assert manifest.read_text() == COMMENTED


def test_enrich_prints_policies_and_companions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "p.yaml"
    manifest.write_text(COMMENTED)
    assert main(["enrich", "--companions", "--state", str(CLUSTER), str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "kind: MultiNetworkPolicy" in out
    assert "k8s.v1.cni.cncf.io/policy-for: kube-system/dp,kube-system/signal" in out
    assert manifest.read_text() == COMMENTED, "without -i the file is not touched"


def test_enrich_needs_a_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "p.yaml"
    manifest.write_text(COMMENTED)
    assert main(["enrich", str(manifest)]) == 2
    assert "--state DIR" in capsys.readouterr().err


def test_record_is_short_json_of_counts_and_digests(cluster: FileState) -> None:
    result = enrich_policy(policy("core", {"podSelector": UPF}), cluster).policy
    record = json.loads(result["metadata"]["annotations"]["multihome.io/enrichment"])
    added = [{"from": blocks(DP), "ports": [{"protocol": "UDP", "port": 2152}]}]
    assert record == {
        "v": 2,
        "rules": {"ingress": [1, digest(added)]},
        "created": ["ingress"],
        "annotations_created": True,
    }
    assert result["spec"]["ingress"][-1:] == added


def test_the_record_stays_short_however_many_cidrs_were_added() -> None:
    """A network of 500 ranges adds 500 peers; the record holds two numbers and a digest."""
    ranges = ",".join(f"10.{i // 250}.{i % 250}.0/24" for i in range(0, 1000, 2))
    docs = [
        namespace("core"),
        {
            **nad("many", "core", '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1"}'),
            "metadata": {"name": "many", "namespace": "core", "annotations": {"multihome.io/cidrs": ranges}},
        },
        pod_manifest(
            "core", name="u", labels={"app": "upf"}, annotations={"k8s.v1.cni.cncf.io/networks": "many"}
        ),
    ]
    state = FileState((f"s:{i}", d) for i, d in enumerate(docs))
    peer = {"podSelector": {"matchLabels": {"app": "upf"}}}
    enriched = enrich_policy(
        policy("core", {"podSelector": peer["podSelector"], "ingress": [{"from": [peer]}]}), state
    ).policy
    assert len(enriched["spec"]["ingress"][0]["from"]) == 501
    assert len(enriched["metadata"]["annotations"]["multihome.io/enrichment"]) < 100
    assert remove_enrichment(enriched)[0]["spec"]["ingress"] == [{"from": [peer]}]


def test_an_edited_addition_is_left_alone_and_said(cluster: FileState) -> None:
    enriched = enrich_policy(policy("core", {"podSelector": UPF}), cluster).policy
    enriched["spec"]["ingress"][-1]["ports"].append({"protocol": "TCP", "port": 22})
    restored, warnings = remove_enrichment(enriched)
    assert restored["spec"]["ingress"] == enriched["spec"]["ingress"], "a changed rule is not removed"
    assert warnings == [
        "multihome.io/enrichment: what it added to spec.ingress rules was changed since; those parts were left as they are"
    ]


def test_a_version_1_record_is_still_removed_exactly(cluster: FileState) -> None:
    added = {"from": blocks(DP), "ports": [{"protocol": "UDP", "port": 2152}]}
    old = policy("core", {"podSelector": UPF, "ingress": [added]})
    old["metadata"]["annotations"] = {
        "multihome.io/enrichment": json.dumps({"v": 1, "rules": {"ingress": [added]}})
    }
    assert remove_enrichment(old)[0]["spec"]["ingress"] == []


def test_the_endpoint_reuses_its_index_until_the_state_changes_and_it_is_old(cluster: FileState) -> None:
    class Changing(FileState):
        version = 0

        def generation(self) -> int:
            return self.version

    state = Changing.from_directory(CLUSTER)
    now = [0.0]
    enricher = NetworkPolicyEnricher(max_age=5.0, clock=lambda: now[0])
    first = enricher.networks(state)
    assert enricher.networks(state) is first
    state.version = 1
    now[0] = 4.0
    assert enricher.networks(state) is first, "younger than max_age: kept"
    now[0] = 6.0
    rebuilt = enricher.networks(state)
    assert rebuilt is not first
    now[0] = 60.0
    assert enricher.networks(state) is rebuilt, "the state has not changed since"
