"""Audit reports: a terminal table, JSON for pipelines, Markdown for pull requests, one HTML page."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import jinja2

from policies.audit import Finding, summarize
from webhook.decisions.checks import CHECKS, SEVERITIES

SCHEMA_VERSION: Final = "multihome.io/audit/v1"
SCHEMA_PATH: Final = Path(__file__).with_name("audit-report.schema.json")
_COLOURS: Final = {"error": "\033[31m", "warning": "\033[33m", "info": "\033[36m"}
_RESET: Final = "\033[0m"


def report_data(findings: Sequence[Finding], source: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """The JSON report (schema in audit-report.schema.json)."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "generatedAt": (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "summary": summarize(findings),
        "checks": {
            c.id: {"name": c.name, "severity": c.severity, "title": c.title, "url": c.url}
            for c in CHECKS.values()
        },
        "findings": [f.as_dict() for f in findings],
    }


def render_json(findings: Sequence[Finding], source: str) -> str:
    return json.dumps(report_data(findings, source), indent=2) + "\n"


def _counted(count: int, severity: str) -> str:
    return f"{count} {severity}{'s' if count != 1 and severity != 'info' else ''}"


def _summary_line(findings: Sequence[Finding]) -> str:
    counts = summarize(findings)
    return ", ".join(_counted(counts[s], s) for s in SEVERITIES)


def render_text(
    findings: Sequence[Finding], source: str, *, colour: bool = False, width: int | None = None
) -> str:
    """A table grouped by severity, wrapped to the terminal, with a summary line."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    lines = [f"multihome audit of {source}", ""]
    for severity in SEVERITIES:
        group = [f for f in findings if f.severity == severity]
        if not group:
            continue
        title = f"{severity.upper()} ({len(group)})"
        lines.append(f"{_COLOURS[severity]}{title}{_RESET}" if colour else title)
        object_width = min(48, max(len(f.object_ref) for f in group))
        for f in group:
            head = f"  {f.check}  {f.object_ref:<{object_width}}  "
            lines.extend(_wrap(head, f.message, width))
            lines.extend(_wrap(" " * len(head), f"fix: {f.fix}", width))
            if f.source:
                lines.append(" " * len(head) + f"at {f.source}")
        lines.append("")
    lines.append(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}: {_summary_line(findings)}")
    return "\n".join(lines) + "\n"


def _wrap(head: str, text: str, width: int) -> list[str]:
    room = max(30, width - len(head))
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > room:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return [head + lines[0], *(" " * len(head) + line for line in lines[1:])]


def render_markdown(findings: Sequence[Finding], source: str) -> str:
    """A pull-request comment: summary, then a table per severity."""
    out = [f"### multihome audit: {_summary_line(findings)}", "", f"Source: `{source}`", ""]
    if not findings:
        out.append("No findings.")
    for severity in SEVERITIES:
        group = [f for f in findings if f.severity == severity]
        if not group:
            continue
        out += [
            f"#### {severity.capitalize()} ({len(group)})",
            "",
            "| check | object | problem | fix |",
            "| --- | --- | --- | --- |",
        ]
        out += [
            f"| {f.check} {CHECKS[f.check].name} | `{_md(f.object_ref)}`{_md_source(f)} | {_md(f.message)} | {_md(f.fix)} |"
            for f in group
        ]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md_source(finding: Finding) -> str:
    return f"<br>`{_md(finding.source)}`" if finding.source else ""


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_html(findings: Sequence[Finding], source: str) -> str:
    """One self-contained page: summary counts, a filterable and sortable table, every fix."""
    counts = summarize(findings)
    return _TEMPLATES.get_template("audit.html.j2").render(
        findings=findings,
        source=source,
        checks=CHECKS,
        severities=SEVERITIES,
        counts=counts,
        counted={s: _counted(counts[s], s).partition(" ")[2] for s in SEVERITIES},
    )


# Autoescaped: every finding's text is the cluster's, and a NAD's config can hold markup.
_TEMPLATES: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("policies", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


RENDERERS: Final = {"json": render_json, "markdown": render_markdown, "html": render_html}
