"""The frozen reference model of npo / kl / idkdpo / rmu, built as cheaply as the run allows.

NPO (Zhang et al. 2024, arXiv:2404.05868), the KL retain term (Maini et al. 2024, arXiv:2401.06121), DPO
(Rafailov et al. 2023, arXiv:2305.18290) and RMU (Li et al. 2024, arXiv:2403.03218) compare the model being
unlearned, pi_theta, with the START model pi_ref = pi_theta0. A full frozen copy costs one more set of weights
(25 GiB for Llama-2-7B in fp32); only what changes during training has to be copied:

* ``adapters`` (LoRA): the update of a weight is ``W + (alpha / r) B A`` and ``W`` never trains, so the trained
  model with its adapters disabled (peft's ``disable_adapter``) computes exactly ``W x``: the start model, from
  the same weights, at no memory cost.
* ``copy``: a deep copy that SHARES every parameter and buffer that does not train (it cannot change, so sharing
  is exact) and clones the trainable ones: full fine-tuning copies the weights once, RMU with WMDP's three
  ``down_proj`` matrices copies three matrices.
* ``cpu``: a full copy in host memory, run on the CPU (device memory: none; slow).
* ``offload``: a full copy in host memory, executed on the training device module by module through accelerate's
  ``cpu_offload`` hooks (device memory: one module at a time; each forward streams the weights over the bus).

Every reference runs in eval mode (no dropout) without gradients.
"""

from __future__ import annotations

from typing import Any

import torch

from mrdkit.errors import MrdkitError
from mrdkit.models import clone_frozen
from mrdkit.unlearning.config import UnlearnConfig

MODES = ("adapters", "copy", "cpu", "offload")


class AdaptersOff(torch.nn.Module):
    """A LoRA (peft) model run with its adapters disabled and in eval mode: the start model, no second copy.

    The peft model is a registered submodule (so its device is the reference's device), but :meth:`train` never
    reaches it: the reference must not switch the trained model's mode; :meth:`forward` puts it in eval mode for
    the call and restores every module's mode afterwards.
    """

    def __init__(self, peft_model: torch.nn.Module) -> None:
        super().__init__()
        self.peft = peft_model

    def train(self, mode: bool = True) -> AdaptersOff:
        self.training = mode
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        modes = [(m, m.training) for m in self.peft.modules()]
        self.peft.eval()
        try:
            with self.peft.disable_adapter(), torch.no_grad():
                return self.peft(*args, **kwargs)
        finally:
            for module, training in modes:
                module.training = training


def resolve_mode(cfg: UnlearnConfig) -> str:
    """``auto`` -> ``adapters`` with LoRA, else ``copy``; other modes as configured (checked by the config)."""
    if cfg.reference != "auto":
        return cfg.reference
    return "adapters" if cfg.lora is not None else "copy"


def shared_bytes(model: torch.nn.Module, ref: torch.nn.Module) -> int:
    """Bytes of parameters ``ref`` shares with ``model`` (what the ``copy`` mode did not duplicate)."""
    own = {p.data_ptr() for p in model.parameters()}
    return sum(p.numel() * p.element_size() for p in ref.parameters() if p.data_ptr() in own)


def never_trained(model: torch.nn.Module, cfg: UnlearnConfig) -> list[torch.Tensor]:
    """Tensors of the start model that no step can change: every buffer, and every parameter that does not require
    grad (under LoRA: all of them, since only the adapters added later train; under FSDP: none, the sharded model
    gets new parameter objects)."""
    if cfg.fsdp:
        return []
    params = list(model.parameters()) if cfg.lora is not None else [p for p in model.parameters()
                                                                     if not p.requires_grad]
    return params + list(model.buffers())


def before_lora(model: torch.nn.Module, cfg: UnlearnConfig, device: torch.device) -> torch.nn.Module | None:
    """The reference of the modes built from the start model BEFORE LoRA wraps it (all but ``adapters``)."""
    mode = resolve_mode(cfg)
    if mode == "adapters":
        return None
    if mode == "copy":
        # under fsdp the copy goes to host memory first: fully_shard moves only each process's shard to the device
        return clone_frozen(model, share=never_trained(model, cfg), device="cpu" if cfg.fsdp else device)
    ref = clone_frozen(model, device="cpu")
    if mode == "offload":
        from accelerate import cpu_offload

        ref = cpu_offload(ref, execution_device=device)
    return ref


def after_lora(peft_model: torch.nn.Module, cfg: UnlearnConfig) -> torch.nn.Module | None:
    """The ``adapters`` reference of a LoRA run (None for the other modes)."""
    if resolve_mode(cfg) != "adapters":
        return None
    if not hasattr(peft_model, "disable_adapter"):
        raise MrdkitError("reference=adapters needs a LoRA (peft) model")
    return AdaptersOff(peft_model)
