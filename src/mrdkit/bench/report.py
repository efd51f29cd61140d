"""Markdown pieces of ``report.md``: numbers, tables and the "paper claim / our result" table.

Each experiment renders its own section with these; :func:`mrdkit.bench.run.render_report` assembles the page.
"""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for tables: 3 significant digits, scientific when tiny or huge; '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def md_table(rows: list[dict[str, Any]], columns: list[str], headers: list[str] | None = None) -> str:
    """A GitHub-markdown table of ``rows`` restricted to ``columns``."""
    headers = headers or columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def claims_table(claims: list[dict[str, Any]]) -> str:
    """The headline table: each claim of the paper, the paper's number, ours, and whether it reproduced."""
    if not claims:
        return "_No experiment has finished yet._"
    return md_table(claims, ["claim", "paper", "ours", "reproduced"],
                    ["paper claim", "paper's number", "our result", "reproduced?"])
