"""``mrd bench``, ``mrd demo`` and ``mrd testbed``: the paper's experiments on the offline TOFU testbed."""

from __future__ import annotations

from typing import List, Optional

import typer

bench_app = typer.Typer(help="Run the paper's experiments and render the report.", no_args_is_help=True,
                        rich_markup_mode=None)
testbed_app = typer.Typer(help="Build or check the offline TOFU testbed models.", no_args_is_help=True,
                          rich_markup_mode=None)


def _log(message: str) -> None:
    typer.echo(message, err=True)


@bench_app.command("run")
def bench_run(
    names: List[str] = typer.Argument(..., help="experiment names ('all' for every one); see 'mrd bench ls'"),
    quick: bool = typer.Option(False, "--quick/--full", help="CI-sized quick variant or the full run"),
    seeds: int = typer.Option(3, help="seeds for experiments that repeat runs"),
    tier: str = typer.Option("tiny", help="testbed tier: tiny | smollm2"),
    out: str = typer.Option("runs/bench", help="bench directory (one sub-directory per experiment)"),
    overwrite: bool = typer.Option(False, help="re-run finished experiments"),
    set_: List[str] = typer.Option([], "--set", help="experiment option key=value (repeatable)"),
) -> None:
    """Run experiments (resumable: finished ones are skipped), then re-render report.md."""
    from mrdkit.bench.run import experiment_names, render_report, run_experiment
    from mrdkit.config import parse_pairs

    options = parse_pairs(set_, "--set")
    selected = experiment_names() if names == ["all"] else names
    for name in selected:
        _log(f"== {name} ({'quick' if quick else 'full'})")
        run_experiment(name, out, quick=quick, seeds=seeds, tier=tier, overwrite=overwrite, options=options,
                       progress=_log)
    typer.echo(f"report: {render_report(out)}")


@bench_app.command("report")
def bench_report(bench_dir: str = typer.Argument(..., help="bench directory written by 'mrd bench run'")) -> None:
    """Re-render report.md from the run files."""
    from pathlib import Path

    from mrdkit.bench.run import render_report
    from mrdkit.errors import MrdkitError

    if not Path(bench_dir).is_dir():
        raise MrdkitError(f"bench directory {bench_dir} does not exist")
    typer.echo(f"report: {render_report(bench_dir)}")


@bench_app.command("ls")
def bench_ls() -> None:
    """List the experiments."""
    from mrdkit.bench.run import EXPERIMENTS, experiment_names

    for name in experiment_names():
        typer.echo(f"{name:<16} {EXPERIMENTS.entry(name).meta['summary']}")


def demo_command(
    out: str = typer.Option("runs/demo", help="output directory"),
    overwrite: bool = typer.Option(False, help="re-run finished steps"),
) -> None:
    """The main job on the embedded testbed: MRD, ground truth, random vs MRD-guided unlearning, report."""
    from mrdkit.bench.demo import run_demo

    run_demo(out, overwrite=overwrite, progress=_log)


@testbed_app.command("build")
def testbed_build(
    tier: str = typer.Option("tiny", help="tiny (from config, trained from scratch) | smollm2 (fine-tuned)"),
    out: Optional[str] = typer.Option(None, help="output directory (default: the cache directory)"),
    seed: int = typer.Option(0, help="seed of tokenizer, init and batch order"),
    allow_failed_gates: bool = typer.Option(False, help="keep the models even if a quality gate fails"),
    restart: bool = typer.Option(False, help="discard an unfinished build instead of resuming it"),
) -> None:
    """Train the target (forget + retain) and retain-only models and check the quality gates.

    An interrupted build resumes when the same command is run again (finished models are kept, the model in
    training continues from its last epoch)."""
    from mrdkit.testbed.tofu import build_testbed

    info = build_testbed(tier, out, seed=seed, allow_failed_gates=allow_failed_gates, log=_log, restart=restart)
    typer.echo(str(info))


@testbed_app.command("verify")
def testbed_verify(tier: str = typer.Option("tiny", help="testbed tier")) -> None:
    """Check the packaged testbed's weight files against the sha256 sums in testbed.json."""
    from mrdkit.testbed.tofu import verify_testbed

    typer.echo(f"testbed {tier}: {verify_testbed(tier)}")


def register(app: typer.Typer) -> None:
    """Attach ``bench``, ``testbed`` and ``demo``."""
    app.add_typer(bench_app, name="bench")
    app.add_typer(testbed_app, name="testbed")
    app.command("demo")(demo_command)
