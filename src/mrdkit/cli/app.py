"""The ``mrd`` command line. Thin: each command parses options, calls one library function, prints a summary.

Heavy imports (torch, transformers) happen inside the commands so that ``mrd --help`` is instant. A
:class:`~mrdkit.errors.MrdkitError` (bad user input) is printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from mrdkit.cli import bench, difficulty, evaluate, plan, score, unlearn
from mrdkit.cli.options import ANSWER_KEY, FIELD, FORMAT, ID_KEY, QUESTION_KEY, TEXT_KEY

app = typer.Typer(
    name="mrd",
    help="Memory Removal Difficulty (MRD) for LLM unlearning: score samples, unlearn with MRD-guided samplers, "
         "evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: wraps each option's text under it, readable at 80 columns
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("mrdkit")
        except metadata.PackageNotFoundError:  # run from a source tree that was never installed
            version = "unknown (not installed)"
        typer.echo(f"mrdkit {version}")
        raise typer.Exit()


@app.callback()
def _main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                               help="print mrdkit's version and exit")) -> None:
    """Memory Removal Difficulty (MRD) for LLM unlearning: score samples, unlearn with MRD-guided samplers,
    evaluate."""


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
    question_key: Optional[str] = QUESTION_KEY,
    answer_key: Optional[str] = ANSWER_KEY,
    text_key: Optional[str] = TEXT_KEY,
    field: Optional[str] = FIELD,
    fmt: Optional[str] = FORMAT,
    id_key: Optional[str] = ID_KEY,
    model: Optional[str] = typer.Option(None, help="model spec whose tokenizer gives token-length stats (only the "
                                                   "tokenizer is loaded)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Counts, fields and length statistics of a dataset."""
    from mrdkit.cli.options import data_options, load_data
    from mrdkit.data import inspect_samples
    from mrdkit.runs import dumps

    samples = load_data(path, split=split, options=data_options(question_key, answer_key, text_key, field, fmt, id_key))
    tokenizer = None
    if model is not None:
        from mrdkit.testbed.specs import load_tokenizer

        texts = [s.text for s in samples] if model.startswith("tiny") else None
        tokenizer = load_tokenizer(model, tiny_texts=texts)
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
        typer.echo(f"interrupted; {_resume_hint(argv)}", err=True)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C into Exit(130) before it reaches the except above
            typer.echo(f"interrupted; {_resume_hint(argv)}", err=True)
        raise


def _resume_hint(argv: Optional[List[str]]) -> str:
    """How to continue after Ctrl-C: what was saved is kept (atomic writes, checkpoints); commands with a
    ``--resume`` flag continue from there, ``mrd eval`` skips the work already done when run again."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    if command in ("score", "unlearn") or args[:2] == ["difficulty", "truth"]:
        again = " ".join(["mrd", *args] + ([] if "--resume" in args else ["--resume"]))
        return f"to continue from the last checkpoint, run: {again}"
    if command == "eval":
        return "run the same command again: finished tasks in --out are skipped"
    return "nothing to resume"


if __name__ == "__main__":
    main()
