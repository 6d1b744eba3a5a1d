"""File state: every kind, workload templates, and errors that name the file and document."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import CLUSTER
from webhook.cluster.files import FileState, StateError


def test_the_fixture_cluster_is_read_whole(cluster: FileState) -> None:
    assert cluster.counts() == {
        "namespaces": 7,
        "networkattachmentdefinitions": 8,
        "attachmentrules": 5,
        "pods": 3,
        "networkpolicies": 1,
    }
    assert cluster.ready()
    core = cluster.namespace("core")
    assert core is not None and core.labels["tier"] == "gold"
    dp = cluster.nad("kube-system", "dp")
    assert dp is not None and [str(c) for c in dp.addressing.cidrs] == ["10.0.4.0/24"]


def test_workloads_count_through_their_pod_templates(cluster: FileState) -> None:
    refs = sorted(p.ref for p in cluster.pods())
    assert refs == ["CronJob edge/report", "Deployment core/upf", "Pod plain/debug"]
    (report,) = cluster.pods("edge")
    assert report.labels == {"role": "batch"}
    assert report.annotations == {"k8s.v1.cni.cncf.io/networks": "local-net"}


def test_examples_are_a_valid_state() -> None:
    state = FileState.from_directory(CLUSTER.parent.parent.parent / "examples" / "cluster")
    assert state.invalid_rules() == []
    assert len(state.rulebook()) == 2


def test_invalid_rules_are_kept_aside_with_their_place(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "apiVersion: multihome.io/v1alpha1\nkind: AttachmentRule\nmetadata: {name: ok}\n"
        "spec: {namespaceSelector: {}, networks: [{name: a}]}\n---\n"
        "apiVersion: multihome.io/v1alpha1\nkind: AttachmentRule\nmetadata: {name: broken}\nspec: {networks: []}\n"
    )
    state = FileState.from_directory(tmp_path)
    assert [r.name for r in state.rulebook().rules] == ["ok"]
    (invalid,) = state.invalid_rules()
    assert invalid.name == "broken"
    assert state.location("AttachmentRule", "", "broken").endswith("rules.yaml:6")
    assert "namespaceSelector is required" in invalid.error


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("kind: Namespace\nmetadata: {name: a}\n---\nkind: [unclosed\n", "bad.yaml:5: not valid YAML"),
        ("kind: Namespace\n---\n- just\n- a list\n", "bad.yaml:3: document is a list"),
        ("a: b\n\tc: d\n", "not valid YAML"),
    ],
)
def test_malformed_files_name_the_file_and_document(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(StateError, match=None) as caught:
        FileState.from_directory(tmp_path)
    assert "bad.yaml" in str(caught.value)
    assert says in str(caught.value)


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="does not exist"):
        FileState.from_directory(tmp_path / "nope")


def test_multi_document_files_and_json_mix(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ns.json").write_text(
        '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "j", "labels": {"a": "b"}}}'
    )
    (tmp_path / "pods.yml").write_text(
        "---\nkind: Pod\nmetadata: {name: p}\n---\n---\nkind: Job\nmetadata: {name: j, namespace: j}\nspec: {template: {metadata: {labels: {x: y}}}}\n"
    )
    (tmp_path / "notes.txt").write_text("not a manifest")
    state = FileState.from_directory(tmp_path)
    assert state.namespace("j") is not None
    assert sorted(p.ref for p in state.pods()) == ["Job j/j", "Pod default/p"]


YAML_BITS = st.sampled_from(
    [
        "---\n",
        "kind: Pod\n",
        "kind: List\nitems:\n",
        "- ",
        "metadata: {name: a}\n",
        "{{ .Values.x }}\n",
        "[",
        "]",
        ": ",
        "\t",
        "\n",
        "apiVersion: v1\n",
        "'",
        "&a ",
        "*a ",
    ]
)


@given(st.lists(YAML_BITS | st.text(max_size=8), max_size=20).map("".join))
def test_a_stream_is_a_state_or_a_state_error_with_its_line(text: str) -> None:
    """Whatever a pipe sends to `--state -`: a state, or StateError naming <stdin> and a line."""
    error: StateError | None = None
    try:
        state = FileState.from_stream(text)
    except StateError as err:
        error = err
    if error is not None:
        assert str(error).startswith("<stdin>")
        return
    for info in state.pods():
        assert state.location("Pod", info.namespace, info.name).startswith("<stdin>:") or info.owner
