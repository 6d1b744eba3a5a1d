"""The command line: rules check and explain, serve's start-up errors, environment defaults."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.server import ROOT, issue_certificates
from tests.support import CLUSTER
from webhook.cli import main as cli_main
from webhook.cli.common import UsageError
from webhook.cli.main import main
from webhook.cli.parser import build_parser, settings_from
from webhook.cli.serve import _wait_for_certificate
from webhook.cluster.kube import Endpoint
from webhook.server import gunicorn as server


def test_rules_check_passes_good_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["rules", "check", str(CLUSTER / "rules.yaml"), str(ROOT / "examples" / "cluster" / "rules.yaml")]
        )
        == 0
    )
    assert "7 rules checked, 0 invalid" in capsys.readouterr().out


def test_rules_check_names_the_bad_rule_and_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "apiVersion: multihome.io/v1alpha1\nkind: AttachmentRule\nmetadata: {name: fine}\n"
        "spec: {namespaceSelector: {}, networks: [{name: a}]}\n---\n"
        "apiVersion: multihome.io/v1alpha1\nkind: AttachmentRule\nmetadata: {name: broken}\n"
        "spec: {namespaceSelector: {matchLabels: {a: 1}}, networks: [{name: a}]}\n"
    )
    assert main(["rules", "check", str(bad)]) == 1
    captured = capsys.readouterr()
    assert (
        f'{bad}:6: AttachmentRule broken: spec.namespaceSelector.matchLabels["a"] is a JSON number'
        in captured.err
    )
    assert "2 rules checked, 1 invalid" in captured.out


def test_rules_check_with_no_rules_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.yaml").write_text("kind: ConfigMap\n")
    assert main(["rules", "check", str(tmp_path / "x.yaml")]) == 1
    assert "no AttachmentRule found" in capsys.readouterr().err


def test_rules_explain_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "rules",
                "explain",
                "--state",
                str(CLUSTER),
                "--namespace",
                "core",
                "--labels",
                "app=smf,role=batch",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "dataplane (priority 100) selects it" in out
    assert "signaling (priority 50) does not select it" in out
    assert "role notin (batch) [no]" in out
    assert (
        "leaves out kube-system/signal from dataplane-fallback: interface net1 is already given by AttachmentRule dataplane"
        in out
    )
    assert "k8s.v1.cni.cncf.io/networks: kube-system/dp@net1" in out


def test_every_flag_has_an_environment_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIHOME_BIND", "127.0.0.1:9443")
    monkeypatch.setenv("MULTIHOME_NAMESPACE_ISOLATION", "strict")
    monkeypatch.setenv("MULTIHOME_GLOBAL_NAMESPACES", "kube-system, shared-nets")
    monkeypatch.setenv("MULTIHOME_LABEL_ADMINS", "group:platform,user:carol")
    settings = settings_from(build_parser().parse_args(["serve"]))
    assert settings.bind == "127.0.0.1:9443"
    assert settings.policy.namespace_isolation == "strict"
    assert settings.policy.global_namespaces == frozenset({"kube-system", "shared-nets"})
    assert [str(p) for p in settings.policy.label_admins] == ["group:platform", "user:carol"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "--state", str(CLUSTER)], "--tls-cert and --tls-key are required"),
        (
            ["serve", "--tls-cert", "a", "--tls-key", "b"],
            "no cluster to talk to: no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not running in a Pod",
        ),
        (
            ["serve", "--namespace-isolation", "loose"],
            '--namespace-isolation "loose" is not one of: warn, strict, off',
        ),
        (["serve", "--workers", "two"], '--workers "two" is not a whole number'),
        (["serve", "--bind", "8443"], '--bind "8443" is not HOST:PORT'),
        (["serve", "--label-admins", "user:"], "bare NAME"),
    ],
)
def test_bad_settings_stop_with_the_reason(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str], no_kubeconfig: None
) -> None:
    assert main(args) == 2
    assert says in capsys.readouterr().err


def test_a_bad_state_directory_stops_serve(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: [")
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--out", str(tmp_path / "c")],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    assert b"issued" in result.stdout
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "serve",
            "--state",
            str(tmp_path),
            "--tls-cert",
            str(tmp_path / "c" / "tls.crt"),
            "--tls-key",
            str(tmp_path / "c" / "tls.key"),
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"bad.yaml:1: not valid YAML" in result.stderr
    assert b"Traceback" not in result.stderr


def test_serve_waits_for_certificate_files_a_secret_volume_fills_later(tmp_path: Path) -> None:
    volume = tmp_path / "tls"
    volume.mkdir()
    cert, key = volume / "tls.crt", volume / "tls.key"
    records: list[logging.LogRecord] = []

    class Remember(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Remember()
    logger = logging.getLogger("multihome.server")
    logger.addHandler(handler)
    try:
        with pytest.raises(UsageError, match="did not appear within 1 s"):
            _wait_for_certificate(cert, key, timeout=1.0, every=0.2)
    finally:
        logger.removeHandler(handler)
    said = [r for r in records if r.getMessage().startswith("waiting for the certificate files")]
    assert len(said) >= 3, "it keeps saying what it waits for"
    assert said[0].__dict__["missing"] == [str(cert), str(key)]
    timer = threading.Timer(0.5, lambda: (cert.write_text("c"), key.write_text("k")))
    timer.start()
    _wait_for_certificate(cert, key, timeout=10.0)
    timer.join()
    assert cert.exists() and key.exists()


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ({}, "does not exist"),
        ({"tls.crt": "c", "tls.key": "k"}, "tls.cert does not exist (DIR holds tls.crt, tls.key)"),
    ],
)
def test_a_mistyped_certificate_path_is_named_at_once(
    tmp_path: Path, layout: dict[str, str], expected: str
) -> None:
    directory = tmp_path / "certs"
    if layout:
        directory.mkdir()
        for name, text in layout.items():
            (directory / name).write_text(text)
            os.utime(directory / name, (time.time() - 60, time.time() - 60))  # written a while ago
    with pytest.raises(UsageError) as raised:
        _wait_for_certificate(directory / "tls.cert", directory / "tls.key", timeout=30.0)
    assert expected.replace("DIR", str(directory)) in str(raised.value)
    assert str(raised.value).startswith(f"--tls-cert {directory / 'tls.cert'}")


def test_a_kubernetes_volume_without_the_keys_yet_is_waited_for(tmp_path: Path) -> None:
    volume = tmp_path / "tls"
    (volume / "..2026_12_03_06_00_00.1").mkdir(parents=True)
    (volume / "..data").symlink_to("..2026_12_03_06_00_00.1")
    with pytest.raises(UsageError, match="did not appear within 0 s"):
        _wait_for_certificate(volume / "tls.crt", volume / "tls.key", timeout=0.1)


def test_serve_freezes_what_the_master_loaded_before_the_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    issue_certificates(tmp_path / "certs")
    seen: dict[str, object] = {}

    def run(self: object) -> None:  # what the master has done by the time it forks
        seen["frozen"] = gc.get_freeze_count()

    monkeypatch.setattr(server.WebhookServer, "run", run)
    monkeypatch.setattr(cli_main, "prepare_metrics_directory", lambda: tmp_path)
    try:
        status = cli_main.main(
            [
                "serve",
                "--state",
                str(CLUSTER),
                "--tls-cert",
                str(tmp_path / "certs" / "tls.crt"),
                "--tls-key",
                str(tmp_path / "certs" / "tls.key"),
            ]
        )
    finally:
        gc.unfreeze()
    assert status == 0
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000


# --- finding a cluster as kubectl does, and saying why not ------------------------------------


@pytest.fixture
def no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine with no kubeconfig anywhere and outside any Pod."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def kubeconfig(path: Path, **servers: str) -> Path:
    """A kubeconfig with one context per server, named as given; the first is current."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(servers)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": names[0],
                "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
                "users": [{"name": n, "user": {"token": f"token-{n}"}} for n in names],
                "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in names],
            }
        )
    )
    return path


def test_a_cluster_is_found_as_kubectl_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_kubeconfig: None
) -> None:
    home = kubeconfig(tmp_path / "home" / ".kube" / "config", home="https://home.example:6443")
    assert Endpoint.load().configuration.host == "https://home.example:6443"
    first = kubeconfig(tmp_path / "a", prod="https://prod.example:443", dev="https://dev.example:443")
    second = kubeconfig(tmp_path / "b", staging="https://staging.example:443")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)]))
    assert Endpoint.load().configuration.host == "https://prod.example:443", "$KUBECONFIG over ~/.kube/config"
    assert Endpoint.load(context="staging").configuration.host == "https://staging.example:443", "merged"
    assert Endpoint.load(home).configuration.host == "https://home.example:6443", "--kubeconfig first"
    with pytest.raises(ValueError, match="staging-typo"):
        Endpoint.load(context="staging-typo")


def test_context_reaches_every_command_that_talks_to_a_cluster() -> None:
    parser = build_parser()
    for argv in (["serve"], ["audit"], ["certs"]):
        assert parser.parse_args([*argv, "--context", "prod"]).context == "prod"
    assert settings_from(parser.parse_args(["serve", "--context", "prod"])).kube_context == "prod"
    assert parser.parse_args(["audit", "-n", "team-a"]).namespace == "team-a"


def cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        check=False,
    )


def test_an_unreachable_server_is_named_in_one_line(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    config = kubeconfig(tmp_path / "kubeconfig", gone=f"https://127.0.0.1:{port}")
    try:
        done = cli("audit", "--kubeconfig", str(config), timeout=30)
    finally:
        closed.close()
    assert done.returncode == 2
    assert (
        done.stderr == f"error: cannot reach the API server at https://127.0.0.1:{port}: connection refused\n"
    )


@pytest.mark.parametrize(
    ("where", "says"),
    [
        (
            "missing/report.html",
            "--output {tmp}/missing/report.html: the folder {tmp}/missing does not exist",
        ),
        (".", "--output {tmp} is a directory; name a file in it"),
    ],
)
def test_a_report_that_cannot_be_written_names_the_path(tmp_path: Path, where: str, says: str) -> None:
    target = tmp_path / where if where != "." else tmp_path
    done = cli("audit", "--state", str(ROOT / "examples" / "cluster"), "--output", str(target))
    assert done.returncode == 2
    assert done.stderr.startswith("error: " + says.format(tmp=tmp_path)), done.stderr
    assert "Traceback" not in done.stderr


def test_a_reader_that_goes_away_ends_the_output_quietly() -> None:
    """`multihome audit | head -1`: the reader has gone before the report is written."""
    audit = subprocess.Popen(
        [sys.executable, "-m", "webhook", "audit", "--state", "tests/fixtures/audit", "--fail-on", "error"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert audit.stdout is not None and audit.stderr is not None
    audit.stdout.close()  # before the audit has read its state, let alone written
    stderr = audit.stderr.read().decode()
    assert audit.wait(60) == 1, "the exit code still says there are findings"
    assert stderr == ""


# --- the audit as a GitOps gate --------------------------------------------------------------


def test_the_audit_reads_a_stream_on_stdin_and_names_file_lines(tmp_path: Path) -> None:
    """`kustomize build | multihome audit --state -`: findings carry the stream's lines."""
    stream = (ROOT / "examples" / "broken" / "mistakes.yaml").read_text()
    done = cli("audit", "--state", "-", "--format", "json", stdin=stream)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source"] == "<stdin>"
    lines = stream.splitlines()
    for finding in report["findings"]:
        file, _, line = finding["source"].rpartition(":")
        assert file == "<stdin>"
        assert lines[int(line) - 1] in ("apiVersion: apps/v1", "apiVersion: k8s.cni.cncf.io/v1"), finding
    assert {f["check"] for f in report["findings"]} >= {"MH001", "MH011"}


@pytest.mark.parametrize("form", ["text", "markdown", "json"])
def test_every_finding_from_a_file_says_where(form: str) -> None:
    done = cli("audit", "--state", str(ROOT / "examples" / "broken"), "--format", form)
    at = f"{ROOT / 'examples' / 'broken' / 'mistakes.yaml'}:9"  # the vpc-secondary NAD
    assert at in done.stdout, done.stdout


def test_a_chart_or_other_yaml_in_the_state_is_skipped_with_one_warning(tmp_path: Path) -> None:
    state = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "broken", state / "apps")
    shutil.copytree(ROOT / "chart", state / "charts" / "multihome")
    (state / "config.yaml").write_text("replicas: 3\nimage: {tag: v1}\n")
    (state / "broken.yaml").write_text("kind: [\n")
    done = cli("audit", "--state", str(state), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"warning: {state / 'charts' / 'multihome'}: a Helm chart, skipped (render it first: "
        f"helm template {state / 'charts' / 'multihome'} | multihome audit --state -)",
        f"warning: {state / 'broken.yaml'}:2: not valid YAML: expected the node content, but found '<stream end>'; skipped",
        f"warning: {state / 'config.yaml'}: holds no Kubernetes objects (no kind), skipped",
    ]
    assert "MH001" in {f["check"] for f in json.loads(done.stdout)["findings"]}
