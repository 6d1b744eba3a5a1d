"""Audit: every finding from fixtures, exit codes, the JSON schema, and the HTML page in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client import generate_latest

from policies.audit import audit, audit_gauges, exit_code
from policies.controllers.rule_status import rule_status
from policies.report import SCHEMA_PATH, render_html, render_markdown, render_text, report_data
from tests.support import FIXTURES, nad, namespace, rule
from webhook.cli.main import main
from webhook.cluster.files import FileState
from webhook.cluster.lease import LeaderLoop
from webhook.decisions.checks import CHECKS
from webhook.telemetry.metrics import Metrics

AUDIT = FIXTURES / "audit"


@pytest.fixture(scope="module")
def state() -> FileState:
    return FileState.from_directory(AUDIT)


def test_every_check_fires_on_its_fixture_and_only_there(state: FileState) -> None:
    findings = audit(state, state.manifests())
    assert {f.check for f in findings} == {c.id for c in CHECKS.values() if c.audited and not c.aws}
    for finding in findings:
        if finding.check == "MH040":
            continue  # Multus' own ConfigMap and DaemonSet keep their real names
        if (finding.check, finding.name) == ("MH005", "mh055-ipvlan-l2"):
            continue  # the ENI reminders stand side by side: an ipvlan master gets its tag reminder too
        # Each fixture object is named for the one check it trips (mh005-dp is also a good network).
        assert finding.name.startswith(finding.check.lower()), (
            f"{finding.check} fired on {finding.object_ref}"
        )


def test_findings_have_the_fix_and_sort_by_severity(state: FileState) -> None:
    findings = audit(state, state.manifests())
    assert all(f.fix and f.message for f in findings)
    order = [f.severity for f in findings]
    assert order == sorted(order, key=["error", "warning", "info"].index)


EXAMPLES = FIXTURES.parent.parent / "examples"


def test_the_example_state_passes_its_own_audit() -> None:
    """`make run` serves examples/cluster: what it shows must be clean (notes only)."""
    state = FileState.from_directory(EXAMPLES / "cluster")
    assert [(f.check, f.object_ref) for f in audit(state, state.manifests()) if f.severity != "info"] == []


def test_a_teams_policy_enriches_to_what_the_example_cluster_holds(tmp_path: Path) -> None:
    written = tmp_path / "upf-from-smf.yaml"
    written.write_text((EXAMPLES / "manifests" / "upf-from-smf.yaml").read_text())
    assert main(["enrich", "-i", "--state", str(EXAMPLES / "cluster"), str(written)]) == 0
    held = yaml.safe_load((EXAMPLES / "cluster" / "policies.yaml").read_text())
    assert yaml.safe_load(written.read_text()) == held


def test_the_broken_examples_show_what_multihome_catches() -> None:
    state = FileState.from_directory(EXAMPLES / "broken")
    checks = {(f.check, f.object_ref) for f in audit(state, state.manifests())}
    assert {
        ("MH001", "NetworkAttachmentDefinition team-c/vpc-secondary"),
        ("MH011", "Deployment team-c/probe"),
        ("MH003", "NetworkAttachmentDefinition team-b/macvlan-lab"),
    } <= checks


def test_namespace_filter(state: FileState) -> None:
    findings = audit(state, state.manifests(), namespace="apps")
    assert findings and all(f.namespace == "apps" for f in findings)


@pytest.mark.parametrize(("fail_on", "code"), [(None, 0), ("error", 1), ("warning", 1), ("info", 1)])
def test_fail_on_sets_the_exit_code(
    fail_on: str | None, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["audit", "--state", str(AUDIT), "--format", "json"] + (["--fail-on", fail_on] if fail_on else [])
    assert main(args) == code
    capsys.readouterr()


def test_fail_on_passes_a_clean_state(state: FileState) -> None:
    only_info = [f for f in audit(state, state.manifests()) if f.severity == "info"]
    assert exit_code(only_info, "warning") == 0
    assert exit_code(only_info, "info") == 1
    assert exit_code([], "error") == 0


def test_json_report_follows_its_schema(capsys: pytest.CaptureFixture[str]) -> None:
    main(["audit", "--state", str(AUDIT), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    assert report["schemaVersion"] == "multihome.io/audit/v1"
    assert report["summary"] == {"error": 16, "warning": 11, "info": 3}
    assert set(report["checks"]) == set(CHECKS)


def test_text_report_is_a_table_with_a_summary(state: FileState) -> None:
    findings = audit(state, state.manifests())
    text = render_text(findings, str(AUDIT), colour=False, width=100)
    assert text.splitlines()[-1] == "30 findings: 16 errors, 11 warnings, 3 info"
    assert "ERROR (16)" in text and "WARNING (11)" in text
    assert "\033[" not in text
    assert "\033[31mERROR (16)" in render_text(findings, str(AUDIT), colour=True)
    assert max(len(line) for line in text.splitlines()) <= 130


def test_markdown_report_escapes_pipes(state: FileState) -> None:
    findings = audit(state, state.manifests())
    markdown = render_markdown(findings, "repo")
    assert markdown.startswith("### multihome audit: 16 errors, 11 warnings, 3 info")
    assert "| MH001 nad-vpc-cni-secondary |" in markdown
    assert render_markdown([], "repo").endswith("No findings.\n")


def test_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.html"
    assert main(["audit", "--state", str(AUDIT), "--format", "html", "--output", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    page = out.read_text()
    # Self-contained: nothing loaded from elsewhere; the only URLs are the links to each check's page.
    assert "<script>" in page and "http://" not in page.replace("http://json-schema", "")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    urls = set(re.findall(r"https://[^\s\"<]+", page))
    assert urls and urls <= {c.url for c in CHECKS.values()}


def test_report_data_is_stable(state: FileState) -> None:
    findings = audit(state, state.manifests())
    first = report_data(findings, "x")
    second = report_data(audit(state, state.manifests()), "x")
    assert first["findings"] == second["findings"]
    assert [(f["check"], f["name"]) for f in first["findings"]] == [(f.check, f.name) for f in findings]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=3000",
]


def _dump_dom(page: Path, fragment: str, profile: Path) -> tuple[str, str]:
    assert CHROMIUM, "the HTML report test needs Chromium: apt-get install chromium (.ci/run does)"
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri() + fragment],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, result.stderr


def test_the_html_report_in_a_real_browser(state: FileState, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(audit(state, state.manifests()), str(AUDIT)))
    dom, log = _dump_dom(page, "", tmp_path / "profile-a")
    assert dom.count('<tr class="') == 30
    assert "30 of 30 findings shown" in dom
    assert not re.search(r"Uncaught|SyntaxError|ReferenceError|TypeError", log), log[-2000:]
    filtered, log = _dump_dom(page, "#filter=MH040", tmp_path / "profile-b")
    assert "2 of 30 findings shown" in filtered
    visible = [row for row in re.findall(r"<tr class=[^>]*>", filtered) if "hidden" not in row]
    assert len(visible) == 2
    assert not re.search(r"Uncaught|SyntaxError|ReferenceError|TypeError", log), log[-2000:]


def test_the_leader_refreshes_audit_gauges(state: FileState) -> None:
    seen: list[int] = []
    leader = [False]
    done = threading.Event()

    def refresh() -> None:
        seen.append(len(audit(state)))
        done.set()

    loop = LeaderLoop("audit", refresh, is_leader=lambda: leader[0], interval=0.05).start()
    try:
        assert not done.wait(0.3), "a follower must not audit"
        leader[0] = True
        assert done.wait(5)
    finally:
        loop.stop()
    assert seen[0] == len(audit(state))
    gauges = audit_gauges(audit(state))
    assert gauges[("MH001", "error")] == 1
    assert len(gauges) == len(CHECKS)
    metrics = Metrics()
    metrics.record_audit({("MH001", "error"): 2, ("MH004", "warning"): 0})
    text = generate_latest(metrics.registry).decode()
    assert 'multihome_audit_findings{check="MH001",severity="error"} 2.0' in text
    assert 'multihome_audit_findings{check="MH004",severity="warning"} 0.0' in text
    assert "multihome_audit_runs_total 1.0" in text
    metrics.record_audit({("MH001", "error"): 0})
    assert "multihome_audit_runs_total 2.0" in generate_latest(metrics.registry).decode()


def test_a_rule_network_without_a_namespace_is_checked_where_the_rule_selects() -> None:
    """`name: dp` means the Pod's namespace: missing in team-b (selected) is MH022; lab is not selected."""
    nad_config = '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "ipam": {"type": "host-local", "subnet": "10.0.4.0/24"}}'
    given = rule("dataplane", "dataplane")
    given["spec"]["networks"] = [{"name": "dp", "interface": "net1"}]
    state = FileState(
        (f"state.yaml#{i}", doc)
        for i, doc in enumerate(
            [
                namespace("team-a", **{"multihome.io/profile": "dataplane"}),
                namespace("team-b", **{"multihome.io/profile": "dataplane"}),
                namespace("lab", **{"multihome.io/profile": "lab"}),
                nad("dp", "team-a", nad_config),
                given,
            ]
        )
    )
    found = [f for f in audit(state) if f.check == "MH022"]
    assert [(f.name, f.message) for f in found] == [
        (
            "dataplane",
            "spec.networks[0] gives dp in the Pod's namespace, and no NetworkAttachmentDefinition dp "
            "exists in team-b, which the rule selects; Pods given it will wait until it does",
        )
    ]
    status = rule_status(given, state, "2026-12-03T00:00:00Z")
    assert (status["conditions"][0]["reason"], status["conditions"][0]["message"]) == (
        "NetworkMissing",
        f"MH022 rule-network-missing: {found[0].message}; {found[0].fix}",
    )
