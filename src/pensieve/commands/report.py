"""``report``: a case as a self-contained HTML report (static pages, readable offline)."""

from __future__ import annotations

from pensieve.commands.common import Commands, arg, err

COMMANDS = Commands()
command = COMMANDS.command


@command(
    "report",
    "write a case as an HTML report readable offline: summary, findings, containers, timeline, graph",
    arg("case", metavar="CASE", help="the case file (DuckDB), opened read-only"),
    arg("--out", required=True, metavar="DIR", help="a new directory for the report (outside the evidence)"),
    output=False,
)
def cmd_report(o):
    """Write the report of CASE into DIR: index.html (the summary), findings.html, a page per
    container (containers/<id>.html), timeline.html and graph.html, with their style sheet and
    scripts. The pages load nothing from a network. Written through the sink: never into the
    evidence (the case's sources), never over an earlier report, a manifest with every file's
    sha256."""
    from pensieve.report import build

    written = build(o.case, o.out)
    err(f"wrote {len(written)} files into {o.out}: open {o.out}/index.html", "32")
    return []


add_parser = COMMANDS.add_parser
