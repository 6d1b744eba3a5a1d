"""The check catalogue, and `multihome checks` reading it."""

from __future__ import annotations

import re

import pytest

from policies.audit import audit
from tests.support import FIXTURES
from webhook.cli.main import main
from webhook.cluster.files import FileState, iter_manifests
from webhook.decisions.checks import CHECKS, SEVERITIES, check
from webhook.decisions.policy import AdmissionPolicy
from webhook.decisions.validate import nad_problems, pod_problems, rule_problems
from webhook.multus.annotations import RULE_KIND


def test_every_check_is_defined_whole_and_once() -> None:
    assert len({c.name for c in CHECKS.values()}) == len(CHECKS)
    for check_id, defined in CHECKS.items():
        assert re.fullmatch(r"MH\d{3}", check_id) and defined.id == check_id
        assert defined.severity in SEVERITIES
        assert defined.title and defined.why.endswith(".") and defined.fix, check_id


def test_checks_lists_every_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(CHECKS)


def test_checks_explains_one_like_ruff_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checks", "mh011"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MH011 pod-vpc-cni-reference (error)\n")
    assert "Why: EKS supports the Amazon VPC CNI only as the primary network" in out
    assert "Fix: " + check("MH011").fix in out
    assert out.rstrip().endswith(
        "More: https://github.com/multihome/multihome/blob/main/docs/checks/MH011.md"
    )


def test_an_unknown_id_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checks", "MH999"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no check MH999: multihome checks lists them (MH001,")
    assert err.count("\n") == 1


# The same check on the same object: admission and the audit say it with the same ID and words.

AUDIT_STATE = FIXTURES / "audit"
ADMISSION_MESSAGE = re.compile(r"(MH\d{3}) ([a-z0-9-]+): ")


def _admission_messages(state: FileState) -> dict[tuple[str, str, str], list[str]]:
    """What admission says of each NAD, Pod and rule in `state`: denials and warnings alike."""
    said: dict[tuple[str, str, str], list[str]] = {}
    policy = AdmissionPolicy(namespace_isolation="off")
    for nad in state.nads():
        found = nad_problems(nad, policy, state)
        said[("NetworkAttachmentDefinition", nad.namespace, nad.name)] = found.errors + found.warnings
    for pod in state.pods():
        if pod.owner:
            continue
        obj = {
            "metadata": {"name": pod.name, "labels": dict(pod.labels), "annotations": dict(pod.annotations)}
        }
        found = pod_problems(obj, pod.namespace, state, policy)
        said[("Pod", pod.namespace, pod.name)] = found.errors + found.warnings
    for _, doc in iter_manifests(sorted(AUDIT_STATE.rglob("*.yaml"))):
        if doc.get("kind") != RULE_KIND:
            continue
        found = rule_problems(doc, state)
        said[("AttachmentRule", "", str(doc["metadata"]["name"]))] = found.errors + found.warnings
    return said


def test_admission_and_the_audit_say_a_check_the_same_way() -> None:
    state = FileState.from_directory(AUDIT_STATE)
    said = _admission_messages(state)
    compared = set()
    for finding in audit(state, state.manifests()):
        messages = said.get((finding.kind, finding.namespace, finding.name))
        if messages is None or not any(m.startswith(finding.check + " ") for m in messages):
            continue  # a check admission does not make (MH015, MH030, ...) or another kind
        expected = f"{finding.check} {check(finding.check).name}: "
        assert any(
            m.startswith(expected)
            and finding.message in m
            and m.endswith(f"; {finding.fix} (more: {check(finding.check).url})")
            for m in messages
        ), f"{finding.check} on {finding.object_ref}: {finding.message!r} not said at admission: {messages}"
        compared.add(finding.check)
    # The checks both make, on the audit's fixture: NADs, addresses, Pods and rules.
    assert {"MH001", "MH002", "MH003", "MH010", "MH011", "MH013", "MH014", "MH021", "MH050"} <= compared


def test_every_admission_message_starts_with_a_check_of_the_catalogue() -> None:
    state = FileState.from_directory(AUDIT_STATE)
    messages = [m for found in _admission_messages(state).values() for m in found]
    assert len(messages) >= 15
    for message in messages:
        match = ADMISSION_MESSAGE.match(message)
        assert match, message
        assert check(match[1]).name == match[2], message
