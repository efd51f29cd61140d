"""Running the model(s) for one unlearning micro-batch: fill a :class:`StepInputs` with what a method needs, and
turn it into the loss that :func:`mrdkit.train.train_step` differentiates.

This is the only unlearning code that calls models; methods stay pure functions of the filled inputs.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from mrdkit.errors import MrdkitError
from mrdkit.logprob import TokenLogProbs, gather_logprobs, model_device, token_logprobs
from mrdkit.unlearning.methods import RMU, StepInputs, UnlearnMethod


def _reference_logprobs(ref_model: torch.nn.Module, batch: Mapping[str, Any], device: torch.device) -> TokenLogProbs:
    """Reference log-probs as normal (non-inference) tensors on ``device``.

    ``token_logprobs`` runs under inference mode; cloning outside it lets autograd save these for backward.
    """
    out = token_logprobs(ref_model, batch)
    return TokenLogProbs(out.values.clone().to(device), out.mask.clone().to(device))


def _forward(model: torch.nn.Module, batch: Mapping[str, Any], *, grad: bool, hidden: bool = False):
    ids, att = (batch[k].to(model_device(model)) for k in ("input_ids", "attention_mask"))
    with torch.enable_grad() if grad else torch.no_grad():
        return model(input_ids=ids, attention_mask=att, use_cache=False, output_hidden_states=hidden)


def _hidden_at(outputs: Any, layer: int) -> Tensor:
    states = outputs.hidden_states  # (n_layers + 1) x (B, T, D); [0] = embeddings
    if not 0 <= layer < len(states) - 1:
        raise MrdkitError(f"rmu: layer {layer} out of range for a model with {len(states) - 1} layers")
    return states[layer + 1]


def _scored(batch: Mapping[str, Any], device: torch.device) -> Tensor:
    return (batch["labels"] != -100).to(device)  # (B, T) tokens whose activations are steered / matched


def _fill_activations(ctx: StepInputs, method: RMU, model, ref_model, forget_batch, retain_batch) -> None:
    device = model_device(model)
    out = _forward(model, forget_batch, grad=True, hidden=True)
    ctx.forget_hidden = _hidden_at(out, method.layer)
    ctx.forget_hidden_mask = _scored(forget_batch, device)
    ctx.forget = gather_logprobs(out.logits.detach(), forget_batch["labels"].to(device))  # logging only
    if method.needs_retain:
        ctx.retain_hidden = _hidden_at(_forward(model, retain_batch, grad=True, hidden=True), method.layer)
        ref_out = _forward(ref_model, retain_batch, grad=False, hidden=True)
        ctx.ref_retain_hidden = _hidden_at(ref_out, method.layer).to(device)
        ctx.retain_hidden_mask = _scored(retain_batch, device)


def _fill_retain_logits(ctx: StepInputs, model, ref_model, retain_batch) -> None:
    device = model_device(model)
    logits = _forward(model, retain_batch, grad=True).logits  # (B, T, V)
    ctx.retain = gather_logprobs(logits, retain_batch["labels"].to(device))
    ctx.retain_logits = logits[:, :-1]  # (B, T-1, V), aligned with ctx.retain.mask
    ctx.ref_retain_logits = _forward(ref_model, retain_batch, grad=False).logits[:, :-1].to(device)


def _check_available(method: UnlearnMethod, ref_model, retain_batch, idk_batch) -> None:
    wants = (("a reference model", method.needs_reference, ref_model), ("a retain batch", method.needs_retain,
             retain_batch), ("an idk batch", method.needs_idk, idk_batch))
    missing = [what for what, needed, given in wants if needed and given is None]
    if missing:
        raise MrdkitError(f"method {method.name!r} needs {' and '.join(missing)}")


def gather_step_inputs(
    method: UnlearnMethod,
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    forget_batch: Mapping[str, Any],
    retain_batch: Mapping[str, Any] | None = None,
    idk_batch: Mapping[str, Any] | None = None,
) -> StepInputs:
    """Run ``model`` (with grad) and ``ref_model`` (without) on exactly what ``method`` needs.

    Batches are :func:`mrdkit.data.collate` dicts (``input_ids``, ``attention_mask``, ``labels``). Log-probs
    come from :func:`mrdkit.logprob.token_logprobs`; KL and RMU need full logits / hidden states, which one
    extra plain forward (``output_hidden_states=True`` for RMU) provides.
    """
    _check_available(method, ref_model, retain_batch, idk_batch)
    ctx = StepInputs()
    if method.needs_activations:
        _fill_activations(ctx, method, model, ref_model, forget_batch, retain_batch)
        return ctx
    device = model_device(model)
    if method.needs_forget:
        ctx.forget = token_logprobs(model, forget_batch, grad=True)
        if method.forget_uses_reference:
            ctx.ref_forget = _reference_logprobs(ref_model, forget_batch, device)
    if method.needs_idk:
        ctx.idk = token_logprobs(model, idk_batch, grad=True)
        if method.forget_uses_reference:
            ctx.ref_idk = _reference_logprobs(ref_model, idk_batch, device)
    if method.needs_logits:
        _fill_retain_logits(ctx, model, ref_model, retain_batch)
    elif method.needs_retain:
        ctx.retain = token_logprobs(model, retain_batch, grad=True)
    return ctx


def method_loss(method: UnlearnMethod, model: torch.nn.Module, ref_model: torch.nn.Module | None,
                forget_batch: Mapping[str, Any], retain_batch: Mapping[str, Any] | None = None,
                idk_batch: Mapping[str, Any] | None = None) -> tuple[Tensor, dict[str, float]]:
    """``(loss, parts)`` of ``method`` on one micro-batch: the body of a :data:`mrdkit.train.MicroLoss`, shared
    by the unlearning loop, the required-updates ground truth and the lookahead difficulty scores."""
    out = method.compute(gather_step_inputs(method, model, ref_model, forget_batch, retain_batch, idk_batch))
    return out.total, out.parts
