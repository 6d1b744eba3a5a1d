"""`pip install .`: the wheel holds the three packages and the runtime pins, and its console
scripts run. Built from a copy of just the files the build names, so nothing else is needed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests import docs_pages, rooms
from tests.server import ROOT
from webhook import __version__
from webhook.decisions.checks import CHECKS

SOURCES = ("pyproject.toml", "README.md", "requirements.txt", "webhook", "policies", "certs")


def build_and_install(work: Path) -> tuple[Path, Path]:
    """(the wheel, a directory it is installed into, scripts in bin/), built with pip as `pip install .` does."""
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(work / "dist"), str(source)], check=True, capture_output=True
    )
    (wheel,) = (work / "dist").glob("multihome-*.whl")
    target = work / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True
    )
    return wheel, target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_and_install(tmp_path_factory.mktemp("package"))


def test_the_wheel_holds_the_packages_and_the_pins(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "webhook",
        "policies",
        "certs",
        f"multihome-{__version__}.dist-info",
    }
    assert "policies/audit-report.schema.json" in names
    assert "policies/templates/audit.html.j2" in names  # the HTML report renders from it
    assert "webhook/cli/serve.py" in names and "policies/controllers/manager.py" in names
    metadata = zipfile.ZipFile(wheel).read(f"multihome-{__version__}.dist-info/METADATA").decode()
    required = [
        line.removeprefix("Requires-Dist: ")
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    pins = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert required == pins


def test_one_version_everywhere() -> None:
    chart = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "--version"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.stdout == f"python -m webhook {__version__}\n"


def run(target: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(
        [str(target / "bin" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=target.parent,
        check=False,
    )


def test_the_console_scripts_run(installed: tuple[Path, Path]) -> None:
    _, target = installed
    done = run(target, "multihome", "rules", "check", str(ROOT / "examples" / "cluster" / "rules.yaml"))
    assert (done.returncode, done.stdout) == (0, "2 rules checked, 0 invalid\n"), done.stderr
    assert run(target, "multihome", "--help").stdout.startswith("usage: multihome ")
    assert run(target, "kubectl-multihome", "--help").stdout.startswith("usage: kubectl multihome ")
    assert run(target, "multihome", "--version").stdout == f"multihome {__version__}\n"
    assert run(target, "kubectl-multihome", "--version").stdout == f"kubectl multihome {__version__}\n"
    audit = run(
        target, "multihome", "audit", "--state", str(ROOT / "examples" / "cluster"), "--format", "json"
    )
    assert '"schemaVersion": "multihome.io/audit/v1"' in audit.stdout, audit.stderr


def test_contributing_draws_the_rooms_of_the_import_contract() -> None:
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    assert rooms.diagram() in contributing, (
        "CONTRIBUTING's rooms differ from the contract: python -m tests.rooms"
    )
    # Every room of the contract is a package or module that exists.
    for room in (room for layer in rooms.layers() for room in layer):
        path = ROOT / room.replace(".", "/")
        assert path.is_dir() or path.with_suffix(".py").is_file(), room


def test_the_readme_is_short_and_its_links_lead_somewhere() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\((?!https?://)([^)#]+)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_the_generated_reference_pages_are_current() -> None:
    stale = [
        str(p.relative_to(ROOT))
        for p, text in docs_pages.pages().items()
        if not p.is_file() or p.read_text() != text
    ]
    assert stale == [], f"stale: {stale}; run python -m tests.docs_pages"


def test_every_alert_has_a_runbook() -> None:
    rules = (ROOT / "chart" / "templates" / "prometheusrule.yaml").read_text()
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert alerts and rules.count("runbook_url:") == len(alerts)
    for alert in alerts:
        assert (ROOT / "docs" / "runbooks" / f"{alert}.md").is_file(), alert


def test_every_check_links_to_its_page() -> None:
    for defined in CHECKS.values():
        page = ROOT / "docs" / "checks" / f"{defined.id}.md"
        assert page.is_file() and defined.url.endswith(f"/docs/checks/{defined.id}.md"), defined.id
