"""``mrd unlearn``: unlearn a forget set with a registered method and an (MRD-guided) sampler, into a run directory.

Thin: parse options, load model and data, call :func:`mrdkit.unlearning.loop.unlearn`, print a summary.
Defaults and their sources: :mod:`mrdkit.unlearning.config` (paper-notes section 6, TOFU's forget.yaml).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

import typer

from mrdkit.cli.options import ANSWER_KEY, ENCODING_HELP, FIELD, FORMAT, ID_KEY, QUESTION_KEY, TEXT_KEY

LR_HELP = "peak AdamW learning rate (default 1e-5: NPO/TOFU value for 7B models; a tiny model needs ~1e-3)"


def _load(spec: str, limit: Optional[int], options: Optional[dict] = None) -> list:
    """Samples of ``spec``: ``tofu:<split>``, a file, a TOFU folder, a hub id, or ``SOURCE:SPLIT``, read with the
    command's data options (:func:`mrdkit.cli.options.data_options`)."""
    from mrdkit.cli.options import load_data
    from mrdkit.errors import MrdkitError

    if limit is not None and limit < 1:
        raise MrdkitError(f"a sample limit must be >= 1, got {limit}")
    source, sep, split = spec.rpartition(":")
    if sep and source and not spec.startswith("tofu:") and not Path(spec).exists():
        return load_data(source, split=split, limit=limit, options=options)
    return load_data(spec, limit=limit, options=options)


def _config(path: Optional[Path], flags: dict[str, Any], lora: Optional[bool], hp: List[str],
            sampler_args: List[str], sets: List[str]):
    """Defaults <- YAML file <- explicit flags <- ``--hp`` / ``--sampler-arg`` <- ``--set`` overrides."""
    from mrdkit.config import apply_overrides, from_dict, load_yaml, parse_pairs
    from mrdkit.unlearning.config import UnlearnConfig

    data = load_yaml(path) if path is not None else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    if lora is not None:
        data["lora"] = (data.get("lora") or {}) if lora else None
    data["method_kwargs"] = {**(data.get("method_kwargs") or {}), **parse_pairs(hp, "--hp")}
    data["sampler_kwargs"] = {**(data.get("sampler_kwargs") or {}), **parse_pairs(sampler_args, "--sampler-arg")}
    cfg = apply_overrides(from_dict(UnlearnConfig, data), sets)
    cfg.check()
    return cfg


def _check_names(method: str, sampler: str, cfg) -> None:
    """Did-you-mean errors for the method, its hyper-parameters and the sampler before any model or data loads."""
    from mrdkit.samplers import SAMPLERS
    from mrdkit.unlearning.methods import build_method

    build_method(method, **cfg.method_kwargs)
    SAMPLERS.get(sampler)


def _summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    def arrow(key: str) -> str:
        start, end = summary.get(f"{key}_start"), summary.get(f"{key}_end")
        return "" if start is None else f"{start:.4g} -> {end:.4g}"

    stop = f"step {summary['stop_step']} ({summary['stop_reason']})" if summary.get("stop_step") is not None else "-"
    rows = {"method / sampler": f"{summary['method']} / {summary['sampler']}", "scores": summary.get("scores") or "-",
            "steps": f"{summary['steps']} of {summary['total_steps']} (epoch {summary['epochs']})", "early stop": stop,
            "forget P(a|q)": arrow("forget_prob"), "retain P(a|q)": arrow("retain_prob"),
            "trainable params": f"{summary['trainable_params']:,}", "wall time": f"{summary['wall_s']:.1f} s",
            "model": summary.get("model_dir", "")}
    return [{"": k, "value": v} for k, v in rows.items()]


def unlearn_command(
    model: str = typer.Option(..., help="model: local HF dir, hub id, 'tiny', 'smollm2'"),
    forget: str = typer.Option(..., help="forget data: 'tofu:forget01', a JSON/JSONL/CSV/parquet file, SOURCE:SPLIT"),
    retain: Optional[str] = typer.Option(None, help="retain data (same forms), e.g. 'tofu:retain99'"),
    method: str = typer.Option("ga", help="ga | graddiff | kl | npo | simnpo | idk | idkdpo | rmu"),
    sampler: str = typer.Option("random", help="random | sequential | cga | mrd_weighted | curriculum | "
                                               "anti_curriculum | refresh"),
    scores: Optional[Path] = typer.Option(None, "--scores", "--mrd",
                                          help="score file for cga & co.: mrd.jsonl of `mrd score` or scores.jsonl "
                                               "of `mrd difficulty score` (without it a score-based sampler scores "
                                               "MRD on the fly)"),
    score_key: Optional[str] = typer.Option(None, help="column of --scores to sample by (default mrd), e.g. "
                                                       "lookahead_3"),
    score_direction: Optional[str] = typer.Option(None, help="what a HIGH value of --score-key predicts: easier | "
                                                             "harder (default: as scores.json declares, else easier)"),
    out: Path = typer.Option(..., help="run directory"),
    lr: Optional[float] = typer.Option(None, help=LR_HELP),
    epochs: Optional[int] = typer.Option(None, help="passes over the forget sampler (default 5)"),
    batch_size: Optional[int] = typer.Option(None, help="forget samples per micro-batch (default 4)"),
    grad_accum: Optional[int] = typer.Option(None, help="micro-batches per optimizer step (default 1)"),
    max_steps: Optional[int] = typer.Option(None, help="stop after N optimizer steps (overrides --epochs)"),
    stop_prob: Optional[float] = typer.Option(None, help="stop once the forget set's mean P(a|q) <= this "
                                                         "(MRD reference code: 0.02)"),
    encoding: Optional[str] = typer.Option(None, help=ENCODING_HELP + " (default joint)"),
    lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="LoRA adapters (r 8, alpha 32) or full "
                                                                      "fine-tuning (default: full)"),
    hp: List[str] = typer.Option([], "--hp", help="method hyper-parameter key=value (repeatable), e.g. beta=0.1"),
    sampler_arg: List[str] = typer.Option([], "--sampler-arg", help="sampler option key=value (repeatable)"),
    set_: List[str] = typer.Option([], "--set", help="config override key=value (repeatable), e.g. "
                                                     "schedule=cosine, lora.r=16, checkpoint_every=50"),
    config: Optional[Path] = typer.Option(None, help="YAML file of UnlearnConfig fields"),
    forget_limit: Optional[int] = typer.Option(None, help="use only the first N forget samples"),
    retain_limit: Optional[int] = typer.Option(None, help="use only the first N retain samples (retain99 has 3960)"),
    seed: Optional[int] = typer.Option(None, help="run seed of the sampler, retain pairing, dropout (default 0)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (default auto)"),
    trust_remote_code: bool = typer.Option(False, help="allow the model's own Python code (off by default)"),
    report_to: Optional[str] = typer.Option(None, help="trackers fed every log row: none | tensorboard | wandb "
                                                       "(comma list; default none; watch: tensorboard --logdir OUT)"),
    idk: Optional[str] = typer.Option(None, help="idk / idkdpo targets: data whose answers are the refusals, e.g. "
                                                 "safe:retain (default: TOFU's idontknow.jsonl)"),
    chunk_tokens: Optional[int] = typer.Option(None, help="cut raw-text documents (muse:books:forget, "
                                                          "wmdp-corpus:...) into N-token windows, as MUSE-News"),
    mixed_precision: Optional[str] = typer.Option(None, help="no | bf16 | fp16: autocast through accelerate, fp32 "
                                                             "weights and AdamW state (default no)"),
    weights_dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16: dtype of the weights "
                                                           "that do not train (LoRA base, frozen layers); needs "
                                                           "--mixed-precision (default float32)"),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-"
                                                          "checkpointing", help="recompute activations in the "
                                                                                "backward pass (less memory)"),
    reference: Optional[str] = typer.Option(None, help="reference of npo/kl/idkdpo/rmu: auto | adapters | copy | "
                                                       "cpu | offload (default auto: adapters with LoRA)"),
    trainable_params: Optional[str] = typer.Option(None, help="regex: train only matching parameters, e.g. "
                                                              "'layers\\.[5-7]\\.mlp\\.down_proj' (WMDP RMU)"),
    fsdp: Optional[bool] = typer.Option(None, "--fsdp/--no-fsdp", help="shard weights, gradients and AdamW state "
                                                                       "over the launched processes (torch FSDP2)"),
    resume: bool = typer.Option(False, help="continue --out from its last checkpoint (same settings)"),
    overwrite: bool = typer.Option(False, help="replace a finished run in --out"),
    question_key: Optional[str] = QUESTION_KEY,
    answer_key: Optional[str] = ANSWER_KEY,
    text_key: Optional[str] = TEXT_KEY,
    field: Optional[str] = FIELD,
    fmt: Optional[str] = FORMAT,
    id_key: Optional[str] = ID_KEY,
) -> None:
    """Unlearn a forget set (GA, GradDiff, NPO, ...) with an MRD-guided sampler; writes model + logs to --out.
    The data options (--question-key ... --format) apply to --forget and --retain."""
    from mrdkit.cli.options import check_out, data_options, load_model_for, print_table
    from mrdkit.progress import progress_bar
    from mrdkit.unlearning.loop import unlearn

    flags = dict(lr=lr, epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps,
                 stop_prob=stop_prob, seed=seed, device=device, encoding=encoding, score_key=score_key,
                 score_direction=score_direction, report_to=report_to, mixed_precision=mixed_precision,
                 weights_dtype=weights_dtype, gradient_checkpointing=gradient_checkpointing, reference=reference,
                 trainable_params=trainable_params, fsdp=fsdp)
    cfg = _config(config, flags, lora, hp, sampler_arg, set_)
    _check_names(method, sampler, cfg)
    check_out(out)
    options = data_options(question_key, answer_key, text_key, field, fmt, id_key)
    forget_set = _load(forget, forget_limit, options)
    retain_set = _load(retain, retain_limit, options) if retain else None
    idk_answers = [s.answer for s in _load(idk, None)] if idk else None
    # under LoRA every base weight stays frozen: load it in weights_dtype at once (no fp32 copy on the way); under
    # fsdp load into host memory, fully_shard moves each process's shard to its device
    loaded = load_model_for(model, forget_set + (retain_set or []), device="cpu" if cfg.fsdp else cfg.device,
                            seed=cfg.seed, trust_remote_code=trust_remote_code,
                            dtype=cfg.weights_dtype if cfg.lora is not None else "float32")
    if chunk_tokens is not None:
        from mrdkit.cli.options import chunk_texts

        forget_set = chunk_texts(forget_set, loaded.tokenizer, chunk_tokens)
        retain_set = chunk_texts(retain_set, loaded.tokenizer, chunk_tokens) if retain_set else None
    meta = {"model": model, "forget_data": forget, "retain_data": retain, "forget_limit": forget_limit,
            "retain_limit": retain_limit, "idk_data": idk, "chunk_tokens": chunk_tokens,
            **({"data_options": options} if options else {})}
    # under accelerate launch / torchrun: one bar and one table, not one per process. Read from the launcher's env:
    # creating accelerate's PartialState here would fix its device choice before unlearn() asks for cpu=True, and
    # on a CPU machine every rank would then run alone (num_processes 1) and race on --out
    main = os.environ.get("RANK", "0") == "0"
    with progress_bar(f"unlearn {method} / {sampler}", 1, show=None if main else False) as bar:
        result = unlearn(loaded.model, loaded.tokenizer, forget_set, retain_set, method=method, sampler=sampler,
                         scores=scores, config=cfg, out_dir=out, resume=resume, overwrite=overwrite, progress=bar,
                         run_meta=meta, idk=idk_answers)
    if main:
        print_table(f"mrd unlearn -> {out}", _summary_rows(result.summary))
        watch = f"; tensorboard --logdir {out}" if "tensorboard" in (result.summary.get("report_to") or []) else ""
        typer.echo(f"wrote {out}/train_log.jsonl, {out}/prob_curve.png{watch}")


def register(app: typer.Typer) -> None:
    """Attach ``mrd unlearn`` to the main app."""
    app.command("unlearn")(unlearn_command)
