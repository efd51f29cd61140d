"""``mrd eval`` (TOFU, MUSE, multiple choice, perplexity, lm-eval) and ``mrd difficulty`` (ground truth, correlations).

Thin: parse, call :func:`mrdkit.evaluation.runner.evaluate`, print a summary. torch and transformers are imported
inside the command so ``mrd --help`` stays instant.
"""

from __future__ import annotations

from typing import Optional

import typer

from mrdkit.cli.options import ANSWER_KEY, ENCODING_HELP, FIELD, FORMAT, ID_KEY, QUESTION_KEY, TEXT_KEY


def eval_command(
    model: str = typer.Option(..., help="model: local HF dir, hub id, 'tiny', 'smollm2'"),
    out: str = typer.Option(..., help="output run directory (re-runs skip metrics already there)"),
    benchmark: str = typer.Option("tofu", help="tofu | mcq (quick WMDP/MMLU accuracy) | ppl (perplexity) | "
                                               "muse-news | muse-books (hub) | lm-eval (lm-evaluation-harness)"),
    forget_split: str = typer.Option("forget10", help="TOFU forget split: forget01 | forget05 | forget10"),
    retain_model: Optional[str] = typer.Option(None, help="retain model evaluated now as forget-quality reference"),
    retain_log: Optional[str] = typer.Option(None, help="retain log: TOFU_EVAL.json, eval.json or run directory"),
    reference_model: Optional[str] = typer.Option(None, help="tofu: reference model of mia_reference (target minus "
                                                            "reference loss), loaded like --retain-model"),
    data: Optional[str] = typer.Option(None, help="mcq/ppl data: file, 'tofu:<split>', 'wmdp:bio', hub id; "
                                                  "muse-news: folder or muse:news|muse:books (hub)"),
    split: Optional[str] = typer.Option(None, help="split of --data (TOFU dir / hub dataset)"),
    template: str = typer.Option("auto", help="prompt template: auto | plain | chat | llama2 | raw"),
    encoding: str = typer.Option("joint", help=ENCODING_HELP),
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
    question_key: Optional[str] = QUESTION_KEY,
    answer_key: Optional[str] = ANSWER_KEY,
    text_key: Optional[str] = TEXT_KEY,
    field: Optional[str] = FIELD,
    fmt: Optional[str] = FORMAT,
    id_key: Optional[str] = ID_KEY,
) -> None:
    """Evaluate a model: TOFU metrics as open-unlearning computes them, MCQ accuracy, or perplexity. The data
    options (--question-key ... --format) apply to --data (mcq, ppl)."""
    from mrdkit.cli.options import check_out, data_options, load_model_for, print_table
    from mrdkit.evaluation.runner import evaluate

    check_out(out)
    if max_length is not None and max_length < 2:
        from mrdkit.errors import MrdkitError

        raise MrdkitError(f"--max-length must be >= 2 tokens, got {max_length}")
    load = dict(dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    model_ = load_model_for(model, [], **load)
    retain_ = load_model_for(retain_model, [], **load) if retain_model is not None else None
    reference_ = load_model_for(reference_model, [], **load) if reference_model is not None else None
    result = evaluate(model_, benchmark=benchmark, out_dir=out, forget_split=forget_split, data=data, split=split,
                      retain_model=retain_, retain_log=retain_log, reference_model=reference_,
                      template=template, batch_size=batch_size, encoding=encoding,
                      max_length=max_length, max_new_tokens=max_new_tokens, skip_generation=skip_generation,
                      limit=limit, overwrite=overwrite, mcq_format=mcq_format, mcq_norm=mcq_norm,
                      tofu_source=tofu_source, dtype=dtype, device=device, max_prompt_tokens=max_prompt_tokens,
                      trust_remote_code=trust_remote_code, tasks=tasks, include_path=include_path,
                      num_fewshot=num_fewshot,
                      data_options=data_options(question_key, answer_key, text_key, field, fmt, id_key))
    rows = [{"metric": k, "value": v["value"], "stderr": v.get("stderr"), "higher is better": v.get("higher_is_better"),
             "n": v["n"]} for k, v in sorted(result.metrics.items())]
    print_table(f"{benchmark} evaluation of {model}", rows)
    for note in result.meta["notes"]:
        typer.echo(f"note: {note}")
    bench = "MUSE" if benchmark.startswith("muse") else "TOFU"
    extra = f", {bench}_EVAL.json, {bench}_SUMMARY.json" if result.community is not None else ""
    extra += ", lm_eval_results.json" if benchmark == "lm-eval" else ""
    typer.echo(f"wrote {out}/eval.json, eval_samples.jsonl{extra} ({result.meta['seconds']:.1f} s)")


def register(app: typer.Typer) -> None:
    """Attach ``mrd eval`` to the main app."""
    app.command("eval")(eval_command)
