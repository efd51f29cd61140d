"""``report.md``: every finished experiment's section plus a "paper claim / our result" table.

The report is rebuilt from the run files alone (``mrd bench report DIR``), so it can always be re-rendered and
its tables are checkable against the JSON/JSONL next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrdkit.runs import atomic_write_text, read_json


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


def render_report(bench_dir: str | Path) -> Path:
    """Write ``bench_dir/report.md`` from the finished experiments in ``bench_dir`` and return its path."""
    from mrdkit.bench.experiments import EXPERIMENTS, experiment_names

    bench_dir = Path(bench_dir)
    sections, claims = [], []
    for name in experiment_names():
        exp_dir = bench_dir / name
        if not (exp_dir / "DONE.json").exists():
            continue
        results = read_json(exp_dir / "results.json")
        text, exp_claims = EXPERIMENTS.entry(name).meta["render"](results, exp_dir)
        mode = "quick" if read_json(exp_dir / "config.json").get("quick") else "full"
        # a re-run reuses finished MRD / ground-truth files, so its wall time covers only what it recomputed
        sections.append(f"## {name} ({mode} run, last invocation {fmt(results.get('wall_s'))} s)\n\n"
                        f"{text.strip()}\n")
        claims.extend({**c, "experiment": name} for c in exp_claims)
    body = [
        "# mrdkit report: sample-level unlearning difficulty (MRD)",
        "",
        "Paper: Feng et al., *A Neuro-inspired Interpretation of Unlearning in Large Language Models through "
        "Sample-level Unlearning Difficulty*, arXiv:2504.06658. Every number below is read from the run files "
        "in this directory; `mrd bench report DIR` re-renders this page.",
        "",
        "## Paper claims and our results",
        "",
        claims_table(claims),
        "",
        *sections,
    ]
    path = bench_dir / "report.md"
    atomic_write_text(path, "\n".join(body))
    return path
