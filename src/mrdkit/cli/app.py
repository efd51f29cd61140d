"""The ``mrd`` command line. Thin: each command parses options, calls one library function, prints a summary.

Heavy imports (torch, transformers) happen inside the commands so that ``mrd --help`` is instant. A
:class:`~mrdkit.errors.MrdkitError` (bad user input) is printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from mrdkit.cli import bench, difficulty, evaluate, plan, score, unlearn

app = typer.Typer(
    name="mrd",
    help="Memory Removal Difficulty (MRD) for LLM unlearning: score samples, unlearn with MRD-guided samplers, "
         "evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _console():
    from rich.console import Console

    return Console(stderr=False)


def all_registries() -> dict[str, list[tuple[str, str]]]:
    """``{kind: [(name, summary), ...]}`` for every registry a config string can pick from (imports torch)."""
    from mrdkit.bench.run import EXPERIMENTS  # importing bench.run registers every experiment
    from mrdkit.data.sources import SOURCES
    from mrdkit.data.templates import TEMPLATES
    from mrdkit.evaluation.metrics import METRICS
    from mrdkit.evaluation.scores import SCORES
    from mrdkit.samplers import SAMPLERS
    from mrdkit.scoring.estimators import ESTIMATORS
    from mrdkit.unlearning.methods import METHODS

    registries = {"data sources": SOURCES, "templates": TEMPLATES, "estimators": ESTIMATORS, "methods": METHODS,
                  "samplers": SAMPLERS, "metrics": METRICS, "difficulty scores": SCORES, "experiments": EXPERIMENTS}
    return {kind: [(e.name, str(e.meta.get("summary", ""))) for e in reg.entries()] for kind, reg in registries.items()}


@app.command("ls")
def list_registries() -> None:
    """List everything a name can pick: data sources, templates, estimators, methods, samplers, metrics,
    difficulty scores, experiments."""
    from rich.markup import escape

    console = _console()
    for kind, entries in all_registries().items():
        console.print(f"[bold]{kind}[/bold]")
        for name, summary in entries:
            console.print(f"  {name:<18} {escape(summary)}")


@data_app.command("inspect")
def data_inspect(
    path: str = typer.Argument(..., help="data file, TOFU directory, 'tofu:<split>', a named source (wmdp:bio, "
                                         "muse:books:forget, safe:forget; see mrd ls) or a datasets hub id"),
    split: Optional[str] = typer.Option(None, help="split (TOFU: forget10, retain90, ...)"),
    question_key: Optional[str] = typer.Option(None, help="field holding the question/prompt"),
    answer_key: Optional[str] = typer.Option(None, help="field holding the answer"),
    text_key: Optional[str] = typer.Option(None, help="field holding raw text"),
    model: Optional[str] = typer.Option(None, help="model spec whose tokenizer gives token-length stats"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Counts, fields and length statistics of a dataset."""
    from mrdkit.data import inspect_samples, load_samples
    from mrdkit.runs import dumps

    samples = load_samples(path, split=split, question_key=question_key, answer_key=answer_key, text_key=text_key)
    tokenizer = None
    if model is not None:
        from mrdkit.cli.options import load_model_for

        tokenizer = load_model_for(model, samples).tokenizer
    stats = inspect_samples(samples, tokenizer=tokenizer)
    if json_out:
        typer.echo(dumps(stats))
        return
    _print_stats(stats, title=f"{path}" + (f" [{split}]" if split else ""))


def _print_stats(stats: dict, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=True)
    table.add_column("statistic")
    table.add_column("value")
    for key, value in _flatten(stats):
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    _console().print(table)


def _flatten(obj: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def _register_commands() -> None:
    """Attach the command modules (each imports its heavy dependencies inside its commands)."""
    for module in (score, unlearn, evaluate, difficulty, bench, plan):
        module.register(app)


def _one_line_warnings() -> None:
    """Show Python warnings as ``warning: <message>`` (no source line) on stderr."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        typer.echo(f"warning: {message}", err=True)

    warnings.showwarning = show


_register_commands()


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: run the app, turning user errors into one line and exit code 2."""
    from mrdkit.errors import MrdkitError

    _one_line_warnings()
    try:
        app(args=argv, standalone_mode=True)
    except MrdkitError as exc:
        message = " ".join(str(exc).split())  # one line, even when a bad value or field name holds newlines
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
