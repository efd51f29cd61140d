"""``mrd plan``: will this scoring / unlearning run fit the GPUs? Peak memory per device from the model's config
(no weights loaded), by component and phase, and what would make it fit (:mod:`mrdkit.plan`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def plan_command(
    model: str = typer.Option(..., help="llama-2-7b | llama-2-13b | llama-2-70b, a model dir or config.json, a "
                                        "cached hub id, tiny..., testbed, smollm2"),
    task: str = typer.Option("both", help="score | unlearn | both"),
    method: str = typer.Option("npo", help="unlearning method (npo / kl / idkdpo / rmu need a reference)"),
    lora: bool = typer.Option(False, "--lora/--no-lora", help="LoRA adapters instead of full fine-tuning"),
    lora_r: int = typer.Option(8, help="LoRA rank"),
    mixed_precision: str = typer.Option("no", help="no | bf16 | fp16"),
    weights_dtype: str = typer.Option("float32", help="dtype of the weights that do not train"),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing/--no-gradient-checkpointing"),
    reference: str = typer.Option("auto", help="auto | adapters | copy | cpu | offload"),
    fsdp: bool = typer.Option(False, "--fsdp/--no-fsdp", help="shard over --gpus processes (unlearning)"),
    gpus: int = typer.Option(1, help="devices: processes for unlearning, a device_map for scoring"),
    gpu_memory: float = typer.Option(80.0, help="memory of each device, GiB"),
    batch_size: int = typer.Option(4, help="forget samples per micro-batch per process"),
    seq_len: int = typer.Option(512, help="tokens per sample"),
    grad_accum: int = typer.Option(1, help="micro-batches per optimizer step"),
    eval_batch_size: int = typer.Option(16, help="batch of the stop rule's probability measurement"),
    attn: str = typer.Option("sdpa", help="attention implementation: sdpa | eager"),
    device: str = typer.Option("cuda", help="cuda | cpu (cpu: what the local measurements compare with)"),
    score_dtype: str = typer.Option("float32", help="mrd score --dtype"),
    perturb_mode: str = typer.Option("copy", help="mrd score --perturb-mode: copy | lowmem"),
    compute_dtype: Optional[str] = typer.Option(None, help="mrd score --compute-dtype (half weights, lowmem)"),
    score_batch_size: int = typer.Option(16, help="mrd score --batch-size"),
    grad_norm: bool = typer.Option(True, "--grad-norm/--no-grad-norm", help="mrd score's gradient-norm proxy"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the full plan as JSON"),
) -> None:
    """Peak memory per device of MRD scoring and unlearning from the model's config; does it fit?"""
    from mrdkit.cli.options import print_table
    from mrdkit.errors import MrdkitError
    from mrdkit.plan import GIB, TASKS, PlanSettings, plan, rows_of

    if task not in (*TASKS, "both"):
        raise MrdkitError(f"--task must be score, unlearn or both, got {task!r}")
    settings = PlanSettings(method=method, lora=lora, lora_r=lora_r, mixed_precision=mixed_precision,
                            weights_dtype=weights_dtype, gradient_checkpointing=gradient_checkpointing,
                            reference=reference, fsdp=fsdp, gpus=gpus, gpu_memory_gib=gpu_memory,
                            batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum,
                            eval_batch_size=eval_batch_size, attn_implementation=attn, device=device,
                            score_dtype=score_dtype, perturb_mode=perturb_mode, compute_dtype=compute_dtype,
                            score_batch_size=score_batch_size, grad_norm=grad_norm)
    result = plan(model, settings, tasks=TASKS if task == "both" else (task,))
    info = result["model"]
    print_table(f"mrd plan: {model} ({info['n_params'] / 1e9:.3g}B parameters) on {gpus} x {gpu_memory:g} GiB",
                rows_of(result))
    for name in TASKS:
        if name not in result:
            continue
        budget = result[name]
        verdict = "fits" if budget["fits"] else "does NOT fit"
        typer.echo(f"{name}: {budget['peak'] / GIB:.1f} GiB per device, {verdict} in {gpu_memory:g} GiB")
        for option in budget.get("fits_with", []):
            typer.echo(f"  fits with {option['change']}: {option['peak_gib']:.1f} GiB")
        if not budget["fits"] and not budget.get("fits_with"):
            typer.echo("  no single change tried here makes it fit; see docs/scaling.md")
    if json_out is not None:
        from mrdkit.runs import atomic_write_json

        atomic_write_json(json_out, {k: v for k, v in result.items()})
        typer.echo(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    """Attach ``mrd plan`` to the main app."""
    app.command("plan")(plan_command)
