"""``mrd difficulty``: difficulty scores, the two ground truths (per-sample updates, joint survival) and how well
the scores predict them.

Thin commands: parse, call one library function (:func:`mrdkit.evaluation.scores.score_difficulty`,
:func:`mrdkit.evaluation.difficulty.required_updates`, :func:`mrdkit.evaluation.survival.joint_survival`,
:func:`mrdkit.evaluation.correlation.correlation_report`), write a run directory, print a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mrdkit.cli.options import ANSWER_KEY, ENCODING_HELP, FIELD, FORMAT, ID_KEY, QUESTION_KEY, TEXT_KEY

difficulty_app = typer.Typer(help="Difficulty scores, ground truths, and how well the scores predict them.",
                             rich_markup_mode=None)


@difficulty_app.command("truth")
def truth_command(
    model: str = typer.Option(..., help="start model: local HF dir, hub id, 'tiny', 'smollm2'"),
    out: str = typer.Option(..., help="output run directory (updates.jsonl)"),
    data: str = typer.Option("tofu:forget01", help="forget samples: 'tofu:<split>', file, TOFU dir, hub id"),
    split: Optional[str] = typer.Option(None, help="split of --data (TOFU dir / hub dataset)"),
    method: str = typer.Option("ga", help="unlearning method whose loss drives the updates"),
    lr: float = typer.Option(1e-3, help="fixed learning rate"),
    threshold: float = typer.Option(0.02, help="forgotten when the mean token probability <= this"),
    relative: Optional[float] = typer.Option(None, help="instead: forgotten when log-prob <= RELATIVE x initial"),
    statistic: str = typer.Option("geometric", help="geometric: exp(mean log p) | arithmetic: mean p"),
    cap: Optional[int] = typer.Option(None, help="most updates (default 150 per sample, 20 epochs per chunk)"),
    chunk_size: Optional[int] = typer.Option(None, help="chunks of N samples, counting epochs (reference code)"),
    token_set: str = typer.Option("answer", help="tokens unlearned and measured: answer | all | all_eos"),
    encoding: str = typer.Option("joint", help=ENCODING_HELP),
    optimizer: str = typer.Option("adamw", help="adamw | sgd"),
    seed: int = typer.Option(0, help="seed (retain / IDK sample choice)"),
    template: str = typer.Option("auto", help="prompt template"),
    limit: Optional[int] = typer.Option(None, help="only the first N samples"),
    retain_data: Optional[str] = typer.Option(None, help="retain samples for methods with a retain term"),
    method_arg: List[str] = typer.Option([], "--method-arg", help="method hyper-parameter key=value (repeatable)"),
    dtype: str = typer.Option("float32", help="float32 | float64"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    trust_remote_code: bool = typer.Option(False, help="allow the model's own Python code (off by default)"),
    resume: bool = typer.Option(False, help="continue an interrupted run in --out"),
    overwrite: bool = typer.Option(False, help="replace a finished run in --out"),
    question_key: Optional[str] = QUESTION_KEY,
    answer_key: Optional[str] = ANSWER_KEY,
    text_key: Optional[str] = TEXT_KEY,
    field: Optional[str] = FIELD,
    fmt: Optional[str] = FORMAT,
    id_key: Optional[str] = ID_KEY,
) -> None:
    """Ground truth: updates of METHOD until each sample (or chunk) is forgotten, from the start model each time."""
    import statistics

    from mrdkit.cli.options import check_out, data_options, load_data, load_model_for
    from mrdkit.config import parse_pairs
    from mrdkit.evaluation.difficulty import required_updates
    from mrdkit.progress import progress_bar
    from mrdkit.runs import RunDir

    settings = dict(method=method, lr=lr, threshold=threshold, relative=relative, statistic=statistic, cap=cap,
                    chunk_size=chunk_size, token_set=token_set, optimizer=optimizer, seed=seed, template=template,
                    encoding=encoding,
                    method_kwargs=parse_pairs(method_arg, "--method-arg"))
    options = data_options(question_key, answer_key, text_key, field, fmt, id_key)
    config = {**settings, "model": model, "data": data, "split": split, "limit": limit, "retain_data": retain_data,
              **({"data_options": options} if options else {})}
    check_out(out)
    samples = load_data(data, split=split, limit=limit, options=options)
    retain = load_data(retain_data, options=options) if retain_data else None
    loaded = load_model_for(model, samples, dtype=dtype, device=device, seed=seed,
                            trust_remote_code=trust_remote_code)
    run = RunDir(out, config, resume=resume, overwrite=overwrite)  # after the loads: no half-made run folder
    with progress_bar(f"{method} updates until forgotten", len(samples)) as bar:
        rows = required_updates(loaded.model, loaded.tokenizer, samples, retain=retain, progress=bar,
                                checkpoint_path=run.file("updates.jsonl"), resume=resume, **settings)
    updates = [r["updates"] for r in rows]
    censored = sum(r["censored"] for r in rows)
    summary = {"n": len(rows), "median_updates": statistics.median(updates), "censored": censored}
    run.mark_finished(summary)
    typer.echo(f"{len(rows)} units: median {summary['median_updates']} updates, {censored} censored at the cap; "
               f"wrote {run.file('updates.jsonl')}")


def _harder_columns(scores: str) -> list[str]:
    """Score columns declared "higher = harder" in the ``scores.json`` beside a ``mrd difficulty score`` output."""
    from mrdkit.runs import read_json

    meta = Path(scores).with_name("scores.json")
    if not meta.is_file():
        return []
    declared = read_json(meta).get("scores", {})
    return [name for name, info in declared.items() if info.get("direction") == "harder"]


def _correlate(scores: str, truth: str, score_cols: Optional[str], truth_col: str, out: Optional[str],
               n_boot: int, seed: int, chunk_members: Optional[int] = None) -> None:
    from mrdkit.cli.options import print_table
    from mrdkit.evaluation.correlation import correlation_report

    cols = [c.strip() for c in score_cols.split(",") if c.strip()] if score_cols else None
    harder = _harder_columns(scores)
    table = correlation_report(scores, truth, score_cols=cols, truth_col=truth_col, n_boot=n_boot, seed=seed,
                               out_dir=out, chunk_members=chunk_members, harder=harder)
    if harder:
        typer.echo(f"note: negated (declared higher = harder): {', '.join(sorted(harder))}")
    shown = [{"score": r["score"], "spearman": r["spearman"],
              "95% CI": f"[{r['spearman_ci_low']:.2f}, {r['spearman_ci_high']:.2f}]", "p": r["spearman_p"],
              "kendall": r["kendall"], "kendall p": r["kendall_p"], "harrell C": r["harrell_c"], "n": r["n"],
              "censored": r["n_censored"]} for r in table]
    print_table(f"scores vs {truth_col} (high score = easy: expect spearman < 0, C > 0.5)", shown)
    if out:
        typer.echo(f"wrote {out}/correlations.json, correlations.csv and one scatter_<score>.png per score")


_SCORES = typer.Option(None, help="score rows (JSONL with id + numeric columns, e.g. run/mrd.jsonl)")
_TRUTH = typer.Option(None, help="ground truth rows (JSONL from 'mrd difficulty truth', e.g. run/updates.jsonl)")
_COLS = typer.Option(None, help="comma-separated score columns (default: every numeric column)")
_TRUTH_COL = typer.Option("updates", help="ground-truth column: updates | survival_step | l1_change | l2_change")
_OUT = typer.Option(None, help="directory for correlations.json/.csv and scatter plots")
_NBOOT = typer.Option(1000, help="bootstrap resamples for the CIs")


@difficulty_app.command("correlate")
def correlate_command(scores: str = typer.Option(..., help="score rows (JSONL)"),
                      truth: str = typer.Option(..., help="ground-truth rows (JSONL)"),
                      score_cols: Optional[str] = _COLS, truth_col: str = _TRUTH_COL, out: Optional[str] = _OUT,
                      n_boot: int = _NBOOT, seed: int = typer.Option(0, help="bootstrap seed"),
                      chunk_members: Optional[int] = typer.Option(
                          None, help="chunks: average scores over their first N members (authors' WMDP script: 3)"),
                      ) -> None:
    """Spearman / Kendall (bootstrap CI, p-value) and Harrell's C of each score against the ground truth."""
    _correlate(scores, truth, score_cols, truth_col, out, n_boot, seed, chunk_members)


@difficulty_app.callback(invoke_without_command=True)
def difficulty_main(ctx: typer.Context, scores: Optional[str] = _SCORES, truth: Optional[str] = _TRUTH,
                    score_cols: Optional[str] = _COLS, truth_col: str = _TRUTH_COL, out: Optional[str] = _OUT,
                    n_boot: int = _NBOOT, seed: int = typer.Option(0, help="bootstrap seed")) -> None:
    """Ground truth ('truth') and correlations ('correlate'; also 'mrd difficulty --scores A --truth B')."""
    if ctx.invoked_subcommand is not None:
        return
    if scores is None and truth is None:
        typer.echo(ctx.get_help())
        return
    if scores is None or truth is None:
        from mrdkit.errors import MrdkitError

        raise MrdkitError("mrd difficulty needs both --scores and --truth (or a command: truth, correlate)")
    _correlate(scores, truth, score_cols, truth_col, out, n_boot, seed)


@difficulty_app.command("score")
def score_command(
    model: str = typer.Option(..., help="model: local HF dir, hub id, 'testbed', 'tiny', 'smollm2'"),
    out: str = typer.Option(..., help="output run directory (scores.jsonl, scores.json, scores.csv)"),
    data: str = typer.Option("tofu:forget01", help="samples: 'tofu:<split>', file, TOFU dir, hub id"),
    split: Optional[str] = typer.Option(None, help="split of --data (TOFU dir / hub dataset)"),
    score: str = typer.Option("lookahead_3,loss,mrd_antithetic",
                              help="comma-separated score names, or 'all' (see 'mrd ls': difficulty scores)"),
    token_set: str = typer.Option("answer", help="tokens scored: answer (as the ground truth) | all | all_eos"),
    encoding: str = typer.Option("joint", help=ENCODING_HELP),
    template: str = typer.Option("auto", help="prompt template"),
    method: str = typer.Option("ga", help="unlearning method of the step-based scores (ga | npo | simnpo)"),
    lr: float = typer.Option(1e-3, help="learning rate of the step-based scores (use the unlearning run's lr)"),
    optimizer: str = typer.Option("adamw", help="adamw | sgd"),
    threshold: float = typer.Option(0.02, help="forgetting threshold tau of newton_steps"),
    draws: int = typer.Option(16, help="MRD draws K of the mrd_* scores"),
    sigma: float = typer.Option(1e-5, help="MRD noise scale"),
    limit: Optional[int] = typer.Option(None, help="only the first N samples"),
    dtype: str = typer.Option("float64", help="float64 (advised: MRD and curvature differences) | float32"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    seed: int = typer.Option(0, help="seed (MRD noise)"),
    method_arg: List[str] = typer.Option([], "--method-arg", help="method hyper-parameter key=value (repeatable)"),
    trust_remote_code: bool = typer.Option(False, help="allow the model's own Python code (off by default)"),
    overwrite: bool = typer.Option(False, help="replace a finished run in --out"),
    question_key: Optional[str] = QUESTION_KEY,
    answer_key: Optional[str] = ANSWER_KEY,
    text_key: Optional[str] = TEXT_KEY,
    field: Optional[str] = FIELD,
    fmt: Optional[str] = FORMAT,
    id_key: Optional[str] = ID_KEY,
) -> None:
    """Per-sample difficulty scores (MRD, lookahead, curvature along the gradient, Newton steps, proxies)."""
    from mrdkit.cli.options import check_out, data_options, load_data, load_model_for, print_table
    from mrdkit.config import parse_pairs
    from mrdkit.evaluation.scores import ScoreConfig, parse_names, score_difficulty
    from mrdkit.runs import RunDir

    names = parse_names(score)
    cfg = ScoreConfig(token_set=token_set, encoding=encoding, template=template, method=method, lr=lr,
                      optimizer=optimizer, threshold=threshold, draws=draws, sigma=sigma, seed=seed,
                      method_kwargs=parse_pairs(method_arg, "--method-arg")).check()
    options = data_options(question_key, answer_key, text_key, field, fmt, id_key)
    config = {"scores": names, "model": model, "data": data, "split": split, "limit": limit, "dtype": dtype,
              "settings": cfg.__dict__, **({"data_options": options} if options else {})}
    check_out(out)
    samples = load_data(data, split=split, limit=limit, options=options)
    loaded = load_model_for(model, samples, dtype=dtype, device=device, seed=seed,
                            trust_remote_code=trust_remote_code)
    run = RunDir(out, config, overwrite=overwrite)  # after the loads: no half-made run folder
    table = score_difficulty(loaded.model, loaded.tokenizer, samples, names, cfg)
    run.write_jsonl("scores.jsonl", table.rows)
    run.write_json("scores.json", table.meta)
    run.write_text("scores.csv", _csv(table.rows))
    run.mark_finished({"n": len(table.rows), "scores": names})
    info = [{"score": n, "high means": m["direction"], "cost (fwd+bwd / sample)": m["cost"],
             "seconds": m["seconds"]}
            for n, m in table.meta["scores"].items()]
    print_table(f"difficulty scores of {len(table.rows)} samples -> {out}/scores.jsonl", info)


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@difficulty_app.command("survival")
def survival_command(
    model: str = typer.Option(..., help="start model: local HF dir, hub id, 'testbed', 'tiny', 'smollm2'"),
    out: str = typer.Option(..., help="output run directory (survival.jsonl)"),
    data: str = typer.Option("tofu:forget01", help="the forget set: 'tofu:<split>', file, TOFU dir, hub id"),
    split: Optional[str] = typer.Option(None, help="split of --data (TOFU dir / hub dataset)"),
    retain_data: Optional[str] = typer.Option(None, help="retain samples for methods with a retain term"),
    method: str = typer.Option("ga", help="unlearning method of the joint run"),
    sampler: str = typer.Option("random", help="forget sampler of the joint run"),
    lr: float = typer.Option(5e-5, help="constant learning rate (AdamW)"),
    batch_size: Optional[int] = typer.Option(None, help="forget samples per step (default: all, full batch)"),
    max_steps: int = typer.Option(200, help="censoring point: most optimizer steps"),
    threshold: float = typer.Option(0.02, help="a sample is forgotten once its P(a|q) <= this"),
    encoding: str = typer.Option("joint", help=ENCODING_HELP),
    template: str = typer.Option("auto", help="prompt template"),
    limit: Optional[int] = typer.Option(None, help="only the first N forget samples"),
    seed: int = typer.Option(0, help="run seed"),
    method_arg: List[str] = typer.Option([], "--method-arg", help="method hyper-parameter key=value (repeatable)"),
    dtype: str = typer.Option("float32", help="float32 | float64"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    trust_remote_code: bool = typer.Option(False, help="allow the model's own Python code (off by default)"),
    overwrite: bool = typer.Option(False, help="replace a finished run in --out"),
    question_key: Optional[str] = QUESTION_KEY,
    answer_key: Optional[str] = ANSWER_KEY,
    text_key: Optional[str] = TEXT_KEY,
    field: Optional[str] = FIELD,
    fmt: Optional[str] = FORMAT,
    id_key: Optional[str] = ID_KEY,
) -> None:
    """Ground truth of the real use case: unlearn the whole forget set jointly, time when each sample falls below
    the threshold (censored at --max-steps)."""
    from mrdkit.cli.options import check_out, data_options, load_data, load_model_for
    from mrdkit.config import parse_pairs
    from mrdkit.evaluation.survival import SurvivalConfig, joint_survival
    from mrdkit.progress import progress_bar
    from mrdkit.runs import RunDir

    cfg = SurvivalConfig(method=method, sampler=sampler, lr=lr, batch_size=batch_size, max_steps=max_steps,
                         threshold=threshold, encoding=encoding, template=template, seed=seed,
                         method_kwargs=parse_pairs(method_arg, "--method-arg"))
    options = data_options(question_key, answer_key, text_key, field, fmt, id_key)
    config = {"survival": cfg.__dict__, "model": model, "data": data, "split": split, "limit": limit,
              "retain_data": retain_data, "dtype": dtype, **({"data_options": options} if options else {})}
    check_out(out)
    forget = load_data(data, split=split, limit=limit, options=options)
    retain = load_data(retain_data, options=options) if retain_data else None
    loaded = load_model_for(model, forget + (retain or []), dtype=dtype, device=device, seed=seed,
                            trust_remote_code=trust_remote_code)
    run = RunDir(out, config, overwrite=overwrite)  # after the loads: no half-made run folder
    with progress_bar(f"joint {method} run, {len(forget)} samples", max_steps) as bar:
        rows = joint_survival(loaded.model, loaded.tokenizer, forget, retain, config=cfg, progress=bar)
    run.write_jsonl("survival.jsonl", rows)
    censored = sum(r["censored"] for r in rows)
    run.mark_finished({"n": len(rows), "censored": censored, "steps": len(rows[0]["trajectory"]) - 1})
    steps = sorted(r["survival_step"] for r in rows if not r["censored"])
    median = steps[len(steps) // 2] if steps else None
    typer.echo(f"{len(rows)} samples: {censored} censored at step {len(rows[0]['trajectory']) - 1}; median survival "
               f"step {median}; wrote {run.file('survival.jsonl')}")


def register(app: typer.Typer) -> None:
    """Attach the ``mrd difficulty`` group to the main app."""
    app.add_typer(difficulty_app, name="difficulty")
