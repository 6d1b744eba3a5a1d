"""Audit reports: a terminal table, JSON for pipelines, Markdown for pull requests, one HTML page."""

from __future__ import annotations

import datetime as dt
import html
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

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
        "checks": {c.id: {"name": c.name, "severity": c.severity, "title": c.title} for c in CHECKS.values()},
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
    rows = "\n".join(
        f'<tr class="{f.severity}" data-severity="{f.severity}">'
        f'<td><span class="badge {f.severity}">{f.severity}</span></td>'
        f'<td title="{html.escape(CHECKS[f.check].title)}">{f.check}<br><small>{html.escape(CHECKS[f.check].name)}</small></td>'
        f"<td>{html.escape(f.kind)}</td><td>{html.escape(f.namespace)}</td><td>{html.escape(f.name)}"
        + (f"<br><small>{html.escape(f.source)}</small>" if f.source else "")
        + "</td>"
        f"<td>{html.escape(f.message)}<div class=fix><b>Fix:</b> {html.escape(f.fix)}</div></td></tr>"
        for f in findings
    )
    cards = "".join(
        f'<label class="card {s}"><input type=checkbox checked data-filter="{s}"> {_counted(counts[s], s).replace(str(counts[s]), f"<b>{counts[s]}</b>", 1)}</label>'
        for s in SEVERITIES
    )
    empty = "" if findings else '<p class="none">No findings: nothing to fix.</p>'
    return _PAGE.format(source=html.escape(source), cards=cards, rows=rows, empty=empty, total=len(findings))


_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>multihome audit</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1c2430; background: #fafbfc; }}
h1 {{ font-size: 1.4rem; margin: 0 0 .2rem; }}
.source {{ color: #5b6675; margin-bottom: 1.2rem; }}
.cards {{ display: flex; gap: .8rem; margin-bottom: 1rem; flex-wrap: wrap; }}
.card {{ padding: .6rem 1rem; border-radius: 8px; background: #fff; border: 1px solid #dde3ea; cursor: pointer; user-select: none; }}
.card b {{ font-size: 1.3rem; }}
.card.error b {{ color: #b42318; }} .card.warning b {{ color: #b54708; }} .card.info b {{ color: #175cd3; }}
#filter {{ width: 100%; max-width: 32rem; padding: .5rem .7rem; border: 1px solid #c9d1da; border-radius: 6px; margin-bottom: 1rem; font: inherit; }}
table {{ border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #dde3ea; }}
th, td {{ text-align: left; vertical-align: top; padding: .5rem .7rem; border-bottom: 1px solid #eef1f4; }}
th {{ background: #f2f4f7; cursor: pointer; white-space: nowrap; }}
th[aria-sort=ascending]::after {{ content: " \\25B2"; }} th[aria-sort=descending]::after {{ content: " \\25BC"; }}
.badge {{ padding: .1rem .45rem; border-radius: 999px; font-size: .8rem; font-weight: 600; }}
.badge.error {{ background: #fee4e2; color: #b42318; }} .badge.warning {{ background: #fef0c7; color: #b54708; }} .badge.info {{ background: #d1e9ff; color: #175cd3; }}
.fix {{ margin-top: .3rem; color: #344054; }}
small {{ color: #667085; }}
.none {{ padding: 1rem; background: #ecfdf3; border: 1px solid #abefc6; border-radius: 8px; }}
#shown {{ color: #5b6675; margin: .5rem 0; }}
</style></head>
<body>
<h1>multihome audit</h1>
<div class="source">{source}</div>
<div class="cards">{cards}</div>
<input id="filter" type="search" placeholder="Filter by check, object or text" aria-label="Filter findings">
<div id="shown"></div>
{empty}
<table id="findings"><thead><tr>
<th data-col="0">Severity</th><th data-col="1">Check</th><th data-col="2">Kind</th><th data-col="3">Namespace</th><th data-col="4">Name</th><th data-col="5">Problem and fix</th>
</tr></thead><tbody>
{rows}
</tbody></table>
<script>
(function () {{
  var rows = Array.prototype.slice.call(document.querySelectorAll("#findings tbody tr"));
  var box = document.getElementById("filter");
  var boxes = Array.prototype.slice.call(document.querySelectorAll("[data-filter]"));
  var order = {{error: 0, warning: 1, info: 2}};
  function apply() {{
    var text = box.value.toLowerCase(), shown = 0;
    var allowed = boxes.filter(function (b) {{ return b.checked; }}).map(function (b) {{ return b.dataset.filter; }});
    rows.forEach(function (row) {{
      var visible = allowed.indexOf(row.dataset.severity) >= 0 && row.textContent.toLowerCase().indexOf(text) >= 0;
      row.hidden = !visible;
      if (visible) shown++;
    }});
    document.getElementById("shown").textContent = shown + " of {total} findings shown";
  }}
  // A link can carry a filter: report.html#filter=MH001
  if (location.hash.indexOf("#filter=") === 0) {{ box.value = decodeURIComponent(location.hash.slice(8)); }}
  box.addEventListener("input", apply);
  boxes.forEach(function (b) {{ b.addEventListener("change", apply); }});
  Array.prototype.slice.call(document.querySelectorAll("th")).forEach(function (th) {{
    th.addEventListener("click", function () {{
      var col = +th.dataset.col, up = th.getAttribute("aria-sort") !== "ascending";
      document.querySelectorAll("th").forEach(function (h) {{ h.removeAttribute("aria-sort"); }});
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var key = function (row) {{ return col === 0 ? order[row.dataset.severity] : row.cells[col].textContent.toLowerCase(); }};
      rows.sort(function (a, b) {{ var x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); }});
      var body = document.querySelector("#findings tbody");
      rows.forEach(function (row) {{ body.appendChild(row); }});
    }});
  }});
  apply();
}})();
</script>
</body></html>
"""


RENDERERS: Final = {"json": render_json, "markdown": render_markdown, "html": render_html}
