"""Sharded full-parameter unlearning with torch FSDP2 (``torch.distributed.fsdp.fully_shard``).

With DDP every process holds the whole model, its gradients and AdamW's two moments: 16 bytes per parameter in
fp32, 112 GB for a 7B model before activations. FSDP2 (Zhao et al. 2023, "PyTorch FSDP", arXiv:2304.11277; the
per-parameter ``fully_shard`` of torch >= 2.4) splits every parameter along dim 0 over the N processes, so each
holds 16/N bytes per parameter and gathers one transformer block at a time for its forward / backward.

How mrdkit uses it (the same calls on CPU with gloo and on GPUs with NCCL):

* every transformer block (the model's ``_no_split_modules`` classes, e.g. ``LlamaDecoderLayer``) is one FSDP unit,
  the rest (embeddings, final norm, LM head; tied weights stay together) the root unit — the unit layout accelerate's
  ``fsdp2_prepare_model`` uses with ``TRANSFORMER_BASED_WRAP``;
* the reference copy of npo / kl / idkdpo / rmu is sharded the same way (frozen, no gradients);
* gradients are reduce-scattered (averaged over processes), the global norm is clipped over the DTensor shards
  (``clip_grad_norm_`` reduces across processes), AdamW steps on the local shards;
* checkpoints and the final model hold WHOLE tensors gathered with ``torch.distributed.checkpoint``'s
  ``get_model_state_dict`` / ``get_optimizer_state_dict`` (``full_state_dict=True``), in the format of a
  single-process run (:mod:`mrdkit.checkpoint`); resuming scatters them back with the ``set_*`` functions.

Why not accelerate's FSDP plugin: accelerate enables it only for GPU launches (on a CPU machine
``accelerate launch --use_fsdp`` silently runs MULTI_CPU DDP), and its ``prepare`` also re-wraps the optimizer. A
run launched with accelerate's FSDP2 config is accepted and sharded here, with its ``reshard_after_forward``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from mrdkit.errors import MrdkitError


def options(**kw: Any):
    """``StateDictOptions`` with whole (unsharded) tensors."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that become their own FSDP unit: instances of the model's ``_no_split_modules`` classes."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise MrdkitError(f"fsdp: found no transformer blocks in {type(model).__name__} (its _no_split_modules "
                          f"{sorted(names) or 'are not set'}); FSDP needs one unit per block")
    return blocks


def shard(model: torch.nn.Module, *, reshard_after_forward: bool = True) -> torch.nn.Module:
    """Apply ``fully_shard`` to every transformer block, then to the model (in place; returns the model).

    Parameters become DTensors sharded over the default process group; their names do not change.
    """
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        raise MrdkitError("fsdp needs a multi-process launch (torchrun --nproc_per_node N, or accelerate launch "
                          "--multi_gpu --num_processes N); see docs/scaling.md")
    for block in transformer_blocks(model):
        fully_shard(block, reshard_after_forward=reshard_after_forward)
    fully_shard(model, reshard_after_forward=reshard_after_forward)
    return model


def plugin_reshard(acc: Any) -> bool:
    """``reshard_after_forward`` of an accelerate FSDP2 launch config (True otherwise, FSDP2's default)."""
    plugin = getattr(acc.state, "fsdp_plugin", None)
    if plugin is None:
        return True
    if getattr(plugin, "fsdp_version", 2) != 2:
        raise MrdkitError("mrd unlearn shards with FSDP2: set fsdp_version: 2 in the accelerate config")
    value = getattr(plugin, "reshard_after_forward", True)
    return value if isinstance(value, bool) else True


def full_parameters(model: torch.nn.Module, names: Any) -> dict[str, torch.Tensor]:
    """Whole CPU tensors of the parameters ``names`` (collective: every process calls it; rank 0 gets them)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(model, options=options(cpu_offload=True))
    return {name: full[name] for name in names if name in full}


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state in ``optimizer.state_dict()``'s layout (parameters numbered 0.. in param-group
    order), gathered from the shards (collective; rank 0 gets the tensors)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=options(cpu_offload=True))
    if "param_groups" not in full:  # ranks other than 0 get an empty dict
        return {}
    index, groups = {}, []
    for group in full["param_groups"]:
        ids = [index.setdefault(fqn, len(index)) for fqn in group["params"]]
        groups.append({**group, "params": ids})
    return {"state": {index[fqn]: value for fqn, value in full["state"].items()}, "param_groups": groups}


def load_full(model: torch.nn.Module, optimizer: torch.optim.Optimizer, params: Mapping[str, torch.Tensor],
              optimizer_state: Mapping[str, Any]) -> None:
    """Scatter whole tensors (every process read the same checkpoint) into the sharded parameters and optimizer."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, dict(params), options=options(strict=False))
    names = {id(p): name for name, p in model.named_parameters()}
    fqns = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    state = {fqns[int(i)]: value for i, value in optimizer_state["state"].items()}
    groups = [{**group, "params": [fqns[int(i)] for i in group["params"]]} for group in optimizer_state["param_groups"]]
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=options())


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on CPU for ``save_pretrained(state_dict=...)`` (collective; rank 0 gets it).

    A tied weight appears once, under its first name (``named_parameters``' rule), as in an unsharded save: the
    gathered dict lists it under every alias (GPT-2's ``lm_head.weight`` = ``transformer.wte.weight``)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(model, options=options(cpu_offload=True))
    keep = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    return {name: tensor for name, tensor in full.items() if name in keep}


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``fully_shard`` was applied to ``model``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)
