"""``mrd score``: per-sample Memory Removal Difficulty (arXiv:2504.06658) into a run directory."""

from __future__ import annotations

import os
from typing import List, Optional

import typer

from mrdkit.cli.options import ANSWER_KEY, ENCODING_HELP, FIELD, FORMAT, ID_KEY, QUESTION_KEY, TEXT_KEY, TOKEN_SET_HELP


def score_command(
    model: str = typer.Option("tiny", help="model: local HF dir, hub id, 'tiny', 'testbed', 'smollm2'"),
    data: str = typer.Option("tofu:forget01",
                             help="data: 'tofu:<split>', TOFU dir, JSON/JSONL/CSV/parquet file, hub id"),
    split: Optional[str] = typer.Option(None, help="split for a TOFU dir or hub dataset"),
    out: str = typer.Option("runs/mrd", help="output run directory"),
    draws: int = typer.Option(100, help="Monte Carlo draws K (antithetic: K pairs)"),
    sigma: float = typer.Option(1e-5, help="noise scale sigma (paper: 1e-5)"),
    estimator: str = typer.Option("antithetic", help="paper | antithetic"),
    dtype: str = typer.Option("auto", help="auto (float32, or float64 where float32's rounding floor hides MRD) | "
                                           "float32 | float64; bfloat16 / float16 only with --compute-dtype"),
    allow_floor: bool = typer.Option(False, "--allow-floor", help="keep a run whose floor check fails (every "
                                                                   "sample then unresolved) instead of refusing it"),
    compute_dtype: Optional[str] = typer.Option(None, help="float32 | float64: score half-precision weights in this "
                                                           "dtype one module at a time (implies lowmem)"),
    device_map: Optional[str] = typer.Option(None, help="spread a model larger than one GPU over the GPUs: auto, or "
                                                        "a JSON {module: device} (from_pretrained's device_map)"),
    batch_size: int = typer.Option(16, help="samples per forward pass"),
    seed: int = typer.Option(0, help="run seed (noise of draw k is independent of batching)"),
    token_set: str = typer.Option("all", help=TOKEN_SET_HELP),
    encoding: str = typer.Option("joint", help=ENCODING_HELP),
    template: str = typer.Option("auto", help="prompt template: auto | plain | chat | llama2 | raw"),
    max_length: int = typer.Option(512, help="truncate samples to this many tokens"),
    scheme: str = typer.Option("mrdkit", help="noise: mrdkit (seeded per draw and parameter) | reference (42 + k)"),
    param_pattern: Optional[str] = typer.Option(None, help="regex: perturb only matching parameters"),
    clip: Optional[float] = typer.Option(None, help="clip MRD at this value (reference code: 2)"),
    limit: Optional[int] = typer.Option(None, help="score only the first N samples"),
    proxies: bool = typer.Option(True, help="also compute loss, Min-K%, zlib, gradient-norm proxies"),
    check_sigma: bool = typer.Option(False, "--check-sigma", help="print the sigma^2 scaling check first"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    trust_remote_code: bool = typer.Option(False, help="allow model code from the hub (off by default)"),
    question_key: Optional[str] = QUESTION_KEY,
    answer_key: Optional[str] = ANSWER_KEY,
    text_key: Optional[str] = TEXT_KEY,
    field: Optional[str] = FIELD,
    fmt: Optional[str] = FORMAT,
    id_key: Optional[str] = ID_KEY,
    resume: bool = typer.Option(False, help="continue an interrupted run in --out"),
    overwrite: bool = typer.Option(False, help="replace a finished run in --out"),
    set_: List[str] = typer.Option([], "--set", help="extra MRD setting key=value (repeatable)"),
    perturb_mode: str = typer.Option("copy", help="copy (clone all weights) | lowmem (one module at a time)"),
    shard: str = typer.Option("draws", help="under torchrun: split draws | samples over the ranks"),
    chunk_tokens: Optional[int] = typer.Option(None, help="cut raw-text documents (muse:books:forget, "
                                                          "wmdp-corpus:...) into N-token windows, as MUSE-News"),
) -> None:
    """Score MRD per sample: high MRD = fragile memory = easy to unlearn."""
    from mrdkit.cli.options import check_out, chunk_texts, data_options, load_data, load_model_for, print_table
    from mrdkit.config import apply_overrides
    from mrdkit.progress import progress_bar
    from mrdkit.scoring.config import MRDConfig
    from mrdkit.scoring.mrd import float32_is_enough, score_mrd

    cfg = MRDConfig(estimator=estimator, draws=draws, sigma=sigma, seed=seed, scheme=scheme, token_set=token_set,
                    encoding=encoding,
                    template=template, max_length=max_length, batch_size=batch_size, param_pattern=param_pattern,
                    clip=clip, proxies=proxies, perturb_mode=perturb_mode, shard=shard, allow_floor=allow_floor,
                    compute_dtype=compute_dtype)
    if compute_dtype is not None and perturb_mode == "copy":
        cfg.perturb_mode = "lowmem"  # copy mode would clone every weight in fp32: the copy compute_dtype avoids
    cfg = apply_overrides(cfg, set_).validate()
    check_out(out)
    samples = load_data(data, split=split, limit=limit,
                        options=data_options(question_key, answer_key, text_key, field, fmt, id_key))
    load = dict(device=_rank_device(device), trust_remote_code=trust_remote_code, for_mrd=cfg.compute_dtype is None,
                seed=seed, device_map=_device_map(device_map))
    loaded = load_model_for(model, samples, dtype="float32" if dtype == "auto" else dtype, **load)
    chunked = chunk_texts(samples, loaded.tokenizer, chunk_tokens) if chunk_tokens is not None else samples
    precision = (dtype, "asked for (--dtype)")
    if dtype == "auto" and cfg.compute_dtype is None:
        enough, why = float32_is_enough(loaded, chunked, cfg)
        precision = ("float32" if enough else "float64", why)
        if not enough:  # the safe dtype where the floor check says float32 cannot carry MRD
            loaded = load_model_for(model, samples, dtype="float64", **load)
    samples = chunked
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks
    if check_sigma and main_rank:
        _print_sigma_check(loaded, samples, cfg)
    with progress_bar(f"MRD {cfg.estimator} K={cfg.draws}", cfg.draws, show=None if main_rank else False) as bar:
        result = score_mrd(loaded, samples, config=cfg, out_dir=out, resume=resume, overwrite=overwrite,
                           progress=bar)
    if not main_rank:
        return
    rows = sorted(result.rows(), key=lambda r: -r["mrd"])
    shown = rows[:5] + rows[-5:] if len(rows) > 10 else rows
    print_table(f"MRD of {len(rows)} samples (easiest first; top and bottom 5)", shown,
                ["id", "mrd", "stderr", "resolved", "base_logprob", "n_tokens"])
    summary = result.summary()
    print_table("settings", _settings_rows(summary, precision))
    typer.echo(f"median MRD {summary['mrd_median']:.4g}; unresolved at K={cfg.draws}: {summary['unresolved']} "
               f"of {summary['n_samples']}; wrote {out}/mrd.jsonl")


def _settings_rows(summary: dict, precision: tuple[str, str]) -> list[dict]:
    """What made the numbers, with why the dtype is what it is and the floor check's verdict (its reason when it
    failed and the run was kept with --allow-floor)."""
    floor = summary.get("floor_ok")
    verdict = "off" if floor is None else "ok" if floor else f"FAILED, every sample unresolved: " \
        f"{summary.get('floor_reason') or ''}"
    rows = {"model": summary.get("model"), "estimator / K / sigma":
            f"{summary.get('estimator')} / {summary.get('draws')} / {summary.get('sigma'):g}",
            "dtype": f"{summary.get('dtype')} ({precision[1]})", "floor check": verdict}
    return [{"setting": k, "value": v} for k, v in rows.items()]


def _device_map(value: Optional[str]):
    """``auto`` / ``balanced`` / ... as given, a JSON object as a dict, None as None."""
    if value is None or not value.lstrip().startswith("{"):
        return value
    import json

    from mrdkit.errors import MrdkitError

    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise MrdkitError(f"--device-map is not valid JSON: {exc}") from None


def _rank_device(device: str) -> str:
    """Under a multi-process launcher each rank takes its own GPU (``cuda:LOCAL_RANK``) when CUDA is used."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or device not in ("auto", "cuda"):
        return device
    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else device


def _print_sigma_check(loaded, samples, cfg) -> None:
    """Curvature should scale as sigma^2: the antithetic part at 2*sigma over sigma is ~4."""
    from mrdkit.scoring.engine import sigma_scaling_check
    from mrdkit.scoring.mrd import make_batches

    batches = make_batches(samples, loaded.tokenizer, cfg, loaded.model)
    check = sigma_scaling_check(loaded.model, batches, cfg, draws=min(cfg.draws, 16))
    verdict = "ok" if check["ok"] else "NOT ~4: the estimate is not the second-order (curvature) signal"
    typer.echo(f"sigma check: curvature(2 sigma) / curvature(sigma) median = {check['median_ratio']:.3f} "
               f"(expected ~4, {check['draws']} draws): {verdict}")


def register(app: typer.Typer) -> None:
    """Attach ``mrd score`` to the main app."""
    app.command("score")(score_command)
