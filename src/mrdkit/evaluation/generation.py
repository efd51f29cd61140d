"""Batched greedy generation for text-similarity metrics (TOFU ROUGE-L recall).

As the community framework generates (open-unlearning ``eval_text_similarity``; TOFU, Maini et al. 2024,
arXiv:2401.06121): greedy decoding (``do_sample=False``), at most ``max_new_tokens`` = 200 new tokens, stop at
EOS, decode only the new tokens with special tokens skipped, then strip whitespace.

Why left padding: a decoder-only model appends each new token after the LAST position of the row, so every row
of a batch must end at the same column; pads go on the left and are masked out (``attention_mask`` 0). Prompts
are tokenized with the same rules as scoring (:func:`mrdkit.data.encode.prompt_token_ids`), so the model sees the
prompt exactly as it was trained on it.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Sequence

import torch

from mrdkit.data.encode import pad_id, prompt_token_ids
from mrdkit.data.samples import Sample
from mrdkit.data.templates import Template
from mrdkit.errors import MrdkitError
from mrdkit.logprob import model_device
from mrdkit.models import context_length

DEFAULT_MAX_NEW_TOKENS = 200


def prompt_ids(samples: Sequence[Sample], tokenizer: Any, template: str | Template = "auto",
               encoding: str = "joint") -> list[list[int]]:
    """Token ids of each sample's prompt, the prefix the answer follows in scoring
    (:func:`mrdkit.data.encode.prompt_token_ids`: the same encoding rules as scoring and training)."""
    return prompt_token_ids(samples, tokenizer, template, encoding)


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both (B, T), padded on the LEFT to the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_token_id] * (width - len(r)) + list(r) for r in rows])  # (B, T)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])  # (B, T)
    return ids, mask


def cut_at_stop(new_ids: Sequence[int], stop_ids: set[int]) -> list[int]:
    """New tokens up to (not including) the first EOS/pad: generate pads finished rows after their EOS."""
    out = []
    for tok in new_ids:
        if int(tok) in stop_ids:
            break
        out.append(int(tok))
    return out


def generate_batch(model: Any, tokenizer: Any, rows: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation ids of one batch (stop tokens removed)."""
    from transformers import GenerationConfig

    limit = context_length(model)
    width = max(len(r) for r in rows)
    budget = max_new_tokens if limit is None else min(max_new_tokens, limit - width)
    if budget <= 0:  # the prompt alone fills the context window: nothing can be generated
        warnings.warn(f"prompt of {width} tokens leaves no room to generate (limit {limit})", stacklevel=3)
        return [[] for _ in rows]
    pad, eos = pad_id(tokenizer), getattr(tokenizer, "eos_token_id", None)
    ids, mask = left_pad(rows, pad)
    device = model_device(model)
    # A fresh config: the model's own generation_config may ask for sampling (temperature, top_p).
    config = GenerationConfig(do_sample=False, max_new_tokens=budget, eos_token_id=eos, pad_token_id=pad,
                              num_beams=1)
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
    stop = {pad} | ({int(eos)} if eos is not None else set())
    return [cut_at_stop(row[ids.shape[1]:].tolist(), stop) for row in out]


def generate_greedy(
    model: Any, tokenizer: Any, samples: Sequence[Sample], *, template: str | Template = "auto",
    encoding: str = "joint",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 16,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict[str, str]:
    """Greedy answers to each sample's prompt, decoded from the new tokens only.

    Prompts are sorted by length (longest first) so each batch pads little; results come back keyed by id.
    Rows stop at EOS; ``max_new_tokens`` is capped so prompt + generation fits the model's position limit.

    Args:
        model: a Hugging Face causal LM (its train/eval mode is left as it was; generation runs without grad).
        tokenizer: its tokenizer (needs a pad or eos token).
        samples: prompts to answer (``sample.prompt`` rendered with ``template``).
        template: prompt template name or callable, as for scoring.
        encoding: ``joint`` | ``community`` | ``separate`` (:func:`mrdkit.data.encode.prompt_token_ids`).
        max_new_tokens: most tokens generated per prompt (TOFU: 200).
        batch_size: prompts per ``generate`` call.
        progress: optional ``progress(done, total)`` callback.

    Returns:
        ``{sample_id: text}``: decoded with special tokens skipped, surrounding whitespace stripped.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise MrdkitError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    ids = prompt_ids(samples, tokenizer, template, encoding)
    order = sorted(range(len(samples)), key=lambda i: -len(ids[i]))
    out: dict[str, str] = {}
    was_training = model.training
    model.eval()  # dropout off: greedy decoding must be deterministic
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            new = generate_batch(model, tokenizer, [ids[i] for i in chunk], max_new_tokens)
            for i, toks in zip(chunk, new):
                text = tokenizer.decode(toks, skip_special_tokens=True)
                out[samples[i].id] = text.strip()
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    finally:
        model.train(was_training)
    return {s.id: out[s.id] for s in samples}


def generate_and_score(model: Any, tokenizer: Any, samples: Sequence[Sample], **kwargs: Any) -> dict[str, dict]:
    """Greedy answers (:func:`generate_greedy` arguments) and their ROUGE-L recall against each sample's answer
    (``rouge_score``, stemmer on; TOFU / open-unlearning ``rougeL_recall``).

    Returns:
        ``{sample_id: {"generation": text, "rouge_l_recall": r}}``.
    """
    from mrdkit.evaluation.metrics import rouge_l_recall_batch

    gens = generate_greedy(model, tokenizer, samples, **kwargs)
    recalls = rouge_l_recall_batch([gens[s.id] for s in samples], [s.answer for s in samples])
    return {s.id: {"generation": gens[s.id], "rouge_l_recall": r} for s, r in zip(samples, recalls)}
