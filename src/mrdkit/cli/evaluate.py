"""``mrd eval`` (TOFU, MUSE, multiple choice, perplexity, lm-eval) and ``mrd difficulty`` (ground truth, correlations).

Thin commands: parse, call one library function (:func:`mrdkit.evaluation.runner.evaluate`,
:func:`~mrdkit.evaluation.difficulty.required_updates`, :func:`~mrdkit.evaluation.difficulty.correlation_report`),
print a summary. torch and transformers are imported inside the commands so ``mrd --help`` stays instant.
"""

from __future__ import annotations

from typing import List, Optional

import typer

difficulty_app = typer.Typer(help="Unlearning-difficulty ground truth and how well scores predict it.")


def eval_command(
    model: str = typer.Option(..., help="model: local HF dir, hub id, 'tiny', 'smollm2'"),
    out: str = typer.Option(..., help="output run directory (re-runs skip metrics already there)"),
    benchmark: str = typer.Option("tofu", help="tofu | mcq (quick WMDP/MMLU accuracy) | ppl (perplexity) | "
                                               "muse-news | muse-books (hub) | lm-eval (lm-evaluation-harness)"),
    forget_split: str = typer.Option("forget10", help="TOFU forget split: forget01 | forget05 | forget10"),
    retain_model: Optional[str] = typer.Option(None, help="retain model evaluated now as forget-quality reference"),
    retain_log: Optional[str] = typer.Option(None, help="retain log: TOFU_EVAL.json, eval.json or run directory"),
    data: Optional[str] = typer.Option(None, help="mcq/ppl data: file, 'tofu:<split>', 'wmdp:bio', hub id; "
                                                  "muse-news: folder or muse:news|muse:books (hub)"),
    split: Optional[str] = typer.Option(None, help="split of --data (TOFU dir / hub dataset)"),
    template: str = typer.Option("auto", help="prompt template: auto | plain | chat | llama2 | raw"),
    batch_size: int = typer.Option(32, help="sequences per forward pass / generate call"),
    max_length: Optional[int] = typer.Option(None, help="truncate scored sequences (default 512; muse-news: context)"),
    max_prompt_tokens: Optional[int] = typer.Option(None, help="muse-news: keep only the last N prompt tokens"),
    max_new_tokens: int = typer.Option(200, help="greedy generation budget for ROUGE (TOFU: 200)"),
    skip_generation: bool = typer.Option(False, "--skip-generation", help="no generation: ROUGE omitted"),
    limit: Optional[int] = typer.Option(None, help="evaluate only the first N samples of each split"),
    mcq_format: str = typer.Option("letters", help="mcq prompt: letters (A/B/C/D) | text (option texts)"),
    mcq_norm: str = typer.Option("sum", help="mcq option score: sum | mean token log-prob"),
    tofu_source: Optional[str] = typer.Option(None, help="TOFU folder or hub id (default: local copy)"),
    dtype: str = typer.Option("float32", help="float32 | float64 | bfloat16"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    trust_remote_code: bool = typer.Option(False, help="allow the model's own Python code (off by default)"),
    overwrite: bool = typer.Option(False, help="recompute everything in --out"),
    tasks: Optional[str] = typer.Option(None, help="lm-eval: comma-separated tasks, e.g. wmdp_bio,wmdp_cyber,mmlu"),
    include_path: Optional[str] = typer.Option(None, help="lm-eval: folder of extra task YAML files (local tasks)"),
    num_fewshot: Optional[int] = typer.Option(None, help="lm-eval: few-shot examples (default: each task's own)"),
) -> None:
    """Evaluate a model: TOFU metrics as open-unlearning computes them, MCQ accuracy, or perplexity."""
    from mrdkit.cli.options import load_model_for, print_table
    from mrdkit.evaluation.runner import evaluate

    load = dict(dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    model_ = load_model_for(model, [], **load)
    retain_ = load_model_for(retain_model, [], **load) if retain_model is not None else None
    result = evaluate(model_, benchmark=benchmark, out_dir=out, forget_split=forget_split, data=data, split=split,
                      retain_model=retain_, retain_log=retain_log, template=template, batch_size=batch_size,
                      max_length=max_length, max_new_tokens=max_new_tokens, skip_generation=skip_generation,
                      limit=limit, overwrite=overwrite, mcq_format=mcq_format, mcq_norm=mcq_norm,
                      tofu_source=tofu_source, dtype=dtype, device=device, max_prompt_tokens=max_prompt_tokens,
                      trust_remote_code=trust_remote_code, tasks=tasks, include_path=include_path,
                      num_fewshot=num_fewshot)
    rows = [{"metric": k, "value": v["value"], "stderr": v.get("stderr"), "higher is better": v.get("higher_is_better"),
             "n": v["n"]} for k, v in sorted(result.metrics.items())]
    print_table(f"{benchmark} evaluation of {model}", rows)
    for note in result.meta["notes"]:
        typer.echo(f"note: {note}")
    bench = "MUSE" if benchmark.startswith("muse") else "TOFU"
    extra = f", {bench}_EVAL.json, {bench}_SUMMARY.json" if result.community is not None else ""
    extra += ", lm_eval_results.json" if benchmark == "lm-eval" else ""
    typer.echo(f"wrote {out}/eval.json, eval_samples.jsonl{extra} ({result.meta['seconds']:.1f} s)")


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
    token_set: str = typer.Option("answer", help="tokens unlearned and measured: answer | all"),
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
) -> None:
    """Ground truth: updates of METHOD until each sample (or chunk) is forgotten, from the start model each time."""
    import statistics

    from mrdkit.cli.options import load_data, load_model_for
    from mrdkit.config import parse_pairs
    from mrdkit.evaluation.difficulty import required_updates
    from mrdkit.progress import progress_bar
    from mrdkit.runs import RunDir

    settings = dict(method=method, lr=lr, threshold=threshold, relative=relative, statistic=statistic, cap=cap,
                    chunk_size=chunk_size, token_set=token_set, optimizer=optimizer, seed=seed, template=template,
                    method_kwargs=parse_pairs(method_arg, "--method-arg"))
    config = {**settings, "model": model, "data": data, "split": split, "limit": limit, "retain_data": retain_data}
    run = RunDir(out, config, resume=resume, overwrite=overwrite)
    samples = load_data(data, split=split, limit=limit)
    retain = load_data(retain_data) if retain_data else None
    loaded = load_model_for(model, samples, dtype=dtype, device=device, seed=seed,
                            trust_remote_code=trust_remote_code)
    with progress_bar(f"{method} updates until forgotten", len(samples)) as bar:
        rows = required_updates(loaded.model, loaded.tokenizer, samples, retain=retain, progress=bar,
                                checkpoint_path=run.file("updates.jsonl"), resume=resume, **settings)
    updates = [r["updates"] for r in rows]
    censored = sum(r["censored"] for r in rows)
    summary = {"n": len(rows), "median_updates": statistics.median(updates), "censored": censored}
    run.mark_finished(summary)
    typer.echo(f"{len(rows)} units: median {summary['median_updates']} updates, {censored} censored at the cap; "
               f"wrote {run.file('updates.jsonl')}")


def _correlate(scores: str, truth: str, score_cols: Optional[str], truth_col: str, out: Optional[str],
               n_boot: int, seed: int) -> None:
    from mrdkit.cli.options import print_table
    from mrdkit.evaluation.correlation import correlation_report

    cols = [c.strip() for c in score_cols.split(",") if c.strip()] if score_cols else None
    table = correlation_report(scores, truth, score_cols=cols, truth_col=truth_col, n_boot=n_boot, seed=seed,
                               out_dir=out)
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
_TRUTH_COL = typer.Option("updates", help="ground-truth column: updates | l1_change | l2_change")
_OUT = typer.Option(None, help="directory for correlations.json/.csv and scatter plots")
_NBOOT = typer.Option(1000, help="bootstrap resamples for the CIs")


@difficulty_app.command("correlate")
def correlate_command(scores: str = typer.Option(..., help="score rows (JSONL)"),
                      truth: str = typer.Option(..., help="ground-truth rows (JSONL)"),
                      score_cols: Optional[str] = _COLS, truth_col: str = _TRUTH_COL, out: Optional[str] = _OUT,
                      n_boot: int = _NBOOT, seed: int = typer.Option(0, help="bootstrap seed")) -> None:
    """Spearman / Kendall (bootstrap CI, p-value) and Harrell's C of each score against the ground truth."""
    _correlate(scores, truth, score_cols, truth_col, out, n_boot, seed)


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


def register(app: typer.Typer) -> None:
    """Attach ``mrd eval`` and the ``mrd difficulty`` group to the main app."""
    app.command("eval")(eval_command)
    app.add_typer(difficulty_app, name="difficulty")
