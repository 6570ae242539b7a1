"""The report model (sections of tables, checks and figures) and its Markdown writer.

Each suite writes its own section file (<dir>/<suite>.md); report.md is assembled from every
section present, so re-running one suite refreshes its section and keeps the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Check:
    """One target from the issue: what was asked, what was measured, whether it was met."""

    name: str
    goal: str
    measured: str
    ok: bool | None  # None: not measured in this run


@dataclass
class Figure:
    filename: str  # relative to the report directory
    caption: str


@dataclass
class Section:
    suite: str
    title: str
    intro: str = ""
    checks: list[Check] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def render_table(table: Table) -> str:
    lines = [f"### {table.title}", ""] if table.title else []
    lines.append("| " + " | ".join(_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.headers) + "|")
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[ok]


def render_section(section: Section) -> str:
    parts = [f"## {section.title}", ""]
    if section.intro:
        parts += [section.intro, ""]
    if section.checks:
        parts += [render_table(Table("Targets", ["target", "goal", "measured", "verdict"],
                                     [[c.name, c.goal, c.measured, _verdict(c.ok)]
                                      for c in section.checks])), ""]
    for table in section.tables:
        parts += [render_table(table), ""]
    for figure in section.figures:
        parts += [f"![{figure.caption}]({figure.filename})", "", f"*{figure.caption}*", ""]
    if section.notes:
        parts += ["### Notes", ""] + [f"- {note}" for note in section.notes] + [""]
    return "\n".join(parts)


def write_section(directory: Path, section: Section) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{section.suite}.md"
    path.write_text(render_section(section))
    return path


def assemble_report(directory: Path, suite_order: Sequence[str], header: str) -> Path:
    """report.md: the header, then every suite section found in the directory, in suite order."""
    sections = [directory / f"{name}.md" for name in suite_order]
    body = [p.read_text() for p in sections if p.exists()]
    path = directory / "report.md"
    path.write_text(header.rstrip() + "\n\n" + "\n".join(body))
    return path
