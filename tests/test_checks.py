"""The check catalogue, and `multihome checks` reading it."""

from __future__ import annotations

import re

import pytest

from webhook.cli.main import main
from webhook.decisions.checks import CHECKS, SEVERITIES, check


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


def test_an_unknown_id_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checks", "MH999"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no check MH999: multihome checks lists them (MH001,")
    assert err.count("\n") == 1
