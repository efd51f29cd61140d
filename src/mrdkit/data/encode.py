"""Samples -> token ids and labels -> padded batches for :func:`mrdkit.logprob.token_logprobs`.

Encoding rules (one place, so scoring, unlearning and evaluation see identical tokens):

- The rendered prompt and answer (:func:`mrdkit.data.templates.render`) are tokenized separately, without
  special tokens, and their ids concatenated. The prompt/answer boundary is then exact, at the cost of the
  tokens at the seam possibly differing from tokenizing the joined string; every stage uses the same rule.
- Start token: if the tokenizer adds a BOS token when it encodes text normally (Llama, Mistral), the sequence
  starts with BOS, as the model saw in training. Otherwise, if the prompt is empty (raw text), the sequence
  starts with BOS, or EOS when there is no BOS (lm-evaluation-harness's convention for GPT-2-style models), so
  that the first text token has a context and is scored. A BOS the chat template already wrote is not doubled.
- EOS is appended after the answer when ``add_eos`` (so the model learns, and is scored on, stopping), except
  after a raw-text chunk that does not end its document (``extra["ends_document"] is False``).
- Raw-text chunks (:mod:`mrdkit.data.chunking`) carry their window's token ids (``extra["input_ids"]``); these
  are used instead of re-tokenizing the decoded text when the chunk was made with the same tokenizer.
- Labels are ``-100`` on the first token (nothing predicts it) and, for ``token_set="answer"``, on the start
  token and the prompt; so the labels that are not ``-100`` are exactly the tokens ``token_logprobs`` scores.
- Sequences longer than ``max_length`` are cut on the right; one warning counts them.
- Padding is on the right; a tokenizer without a pad token pads with EOS (:func:`pad_id`). Padded positions
  have attention 0 and label -100, so the pad id never changes a result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from mrdkit.data.samples import Sample
from mrdkit.data.templates import Template, render
from mrdkit.errors import MrdkitError

IGNORE_INDEX = -100
TOKEN_SETS = ("answer", "all")


@dataclass
class EncodedSample:
    """Token ids of one sample and the labels scored on it.

    Attributes:
        id: the sample id.
        input_ids: start token (if any) + prompt + answer (+ EOS).
        labels: same length; ``-100`` where not scored.
        truncated: the sequence was cut to ``max_length``.
    """

    id: str
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """True if ``tokenizer`` puts its BOS token first when encoding with default special tokens."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = tokenizer("a")["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bool(with_special) and with_special[0] == bos and without[:1] != [bos]


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad token id, else its EOS id (padding is masked, so any valid id works)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise MrdkitError("tokenizer has neither a pad nor an eos token; cannot pad batches")


def _start_ids(tokenizer: Any, prompt_ids: list[int], adds_bos: bool) -> list[int]:
    """The start token to prepend (see the module docstring), or nothing."""
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    if adds_bos:
        return [] if prompt_ids[:1] == [bos] else [bos]
    if not prompt_ids:
        start = bos if bos is not None else eos
        return [start] if start is not None else []
    return []


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Ids of each text without special tokens (one batched call: fast tokenizers run it in Rust)."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _answer_ids(samples: Sequence[Sample], answers: list[str], tokenizer: Any) -> list[list[int]]:
    """Answer ids: the ids a raw-text chunk carries (:mod:`mrdkit.data.chunking`) when this tokenizer made them,
    else the tokenized answer text (with one warning if chunks of another tokenizer had to be re-tokenized)."""
    ids = _tokenize(tokenizer, answers)
    if not any("input_ids" in s.extra for s in samples):
        return ids
    from mrdkit.data.chunking import pretokenized_ids, tokenizer_fingerprint

    fingerprint, foreign = tokenizer_fingerprint(tokenizer), 0
    for i, s in enumerate(samples):
        carried = pretokenized_ids(s, fingerprint)
        foreign += carried is None and s.kind == "text" and "input_ids" in s.extra
        ids[i] = carried if carried is not None else ids[i]
    if foreign:
        warnings.warn(f"{foreign} text chunks carry token ids of another tokenizer: their text was re-tokenized",
                      stacklevel=3)
    return ids


def _eos(tokenizer: Any, add_eos: bool) -> list[int]:
    if not add_eos:
        return []
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise MrdkitError("tokenizer has no eos token; pass add_eos=False")
    return [int(eos)]


def _encode_one(sample_id: str, start: list[int], prompt: list[int], answer: list[int], token_set: str,
                max_length: int) -> EncodedSample:
    input_ids = start + prompt + answer
    # position 0 is never scored (nothing predicts it), so its label is -100 whatever the token set
    masked = max(1, len(start) + (len(prompt) if token_set == "answer" else 0))
    labels = [IGNORE_INDEX] * masked + input_ids[masked:]
    truncated = len(input_ids) > max_length
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        why = (f"none of its answer tokens fit in max_length={max_length} (prompt: {len(start) + len(prompt)} "
               f"tokens); raise max_length") if truncated else "it has no tokens to score (empty answer?)"
        raise MrdkitError(f"sample {sample_id!r}: {why}")
    return EncodedSample(id=sample_id, input_ids=input_ids, labels=labels, truncated=truncated)


def encode_samples(samples: Sequence[Sample], tokenizer: Any, *, template: str | Template = "auto",
                   token_set: str = "answer", max_length: int = 512, add_eos: bool = True) -> list[EncodedSample]:
    """Tokenize samples into ids and labels (rules in the module docstring).

    Args:
        samples: the samples; raw-text samples always use the ``raw`` template.
        tokenizer: a Hugging Face tokenizer.
        template: a registered template name (``plain``, ``llama2``, ``chat``, ``auto``, ``raw``) or a callable.
        token_set: ``"answer"`` scores answer (+ EOS) tokens only; ``"all"`` scores every token but the first.
        max_length: longest sequence kept; longer ones are cut on the right (one warning counts them).
        add_eos: append the EOS token after the answer.

    Returns:
        One :class:`EncodedSample` per sample, in order.

    Raises:
        MrdkitError: bad ``token_set``/``max_length``, or a sample with no scored token left.
    """
    if token_set not in TOKEN_SETS:
        raise MrdkitError(f"unknown token_set {token_set!r} (known: {', '.join(TOKEN_SETS)})")
    if max_length < 2:
        raise MrdkitError(f"max_length must be at least 2, got {max_length}")
    rendered = [render(s, tokenizer, template) for s in samples]
    prompts = _tokenize(tokenizer, [p for p, _ in rendered])
    eos = _eos(tokenizer, add_eos)
    answers = [ids + (eos if s.extra.get("ends_document", True) else [])
               for s, ids in zip(samples, _answer_ids(samples, [a for _, a in rendered], tokenizer))]
    adds_bos = tokenizer_adds_bos(tokenizer)
    out = [_encode_one(s.id, _start_ids(tokenizer, p, adds_bos), p, a, token_set, max_length)
           for s, p, a in zip(samples, prompts, answers)]
    n_cut = sum(e.truncated for e in out)
    if n_cut:
        warnings.warn(f"{n_cut} of {len(out)} samples truncated to {max_length} tokens", stacklevel=2)
    return out


def collate(encoded: Sequence[EncodedSample], pad_token_id: int) -> dict[str, Any]:
    """Right-pad encoded samples into a batch.

    Returns:
        ``input_ids`` (B, T) long (pads = ``pad_token_id``), ``attention_mask`` (B, T) long (0 at pads),
        ``labels`` (B, T) long (-100 at pads) and ``ids`` (list of B sample ids), T = longest sequence.
    """
    import torch  # lazy: `mrd --help` and data inspection must not pay for torch

    if not encoded:
        raise MrdkitError("cannot collate an empty list of samples")
    if pad_token_id is None:
        raise MrdkitError("pad_token_id is None; use mrdkit.data.pad_id(tokenizer)")
    width = max(len(e.input_ids) for e in encoded)
    pads = [width - len(e.input_ids) for e in encoded]
    # pad as Python lists and build each tensor in one call: much faster than per-row tensor writes
    input_ids = torch.tensor([e.input_ids + [int(pad_token_id)] * p for e, p in zip(encoded, pads)])  # (B, T)
    attention_mask = torch.tensor([[1] * len(e.input_ids) + [0] * p for e, p in zip(encoded, pads)])  # (B, T)
    labels = torch.tensor([e.labels + [IGNORE_INDEX] * p for e, p in zip(encoded, pads)])  # (B, T)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "ids": [e.id for e in encoded]}


def iter_batches(encoded: Sequence[EncodedSample], batch_size: int, *, sort_by_length: bool = False,
                 pad_token_id: int = 0) -> Iterator[dict[str, Any]]:
    """Yield collated batches of ``batch_size`` samples (the last may be smaller).

    Args:
        encoded: encoded samples.
        batch_size: samples per batch.
        sort_by_length: longest first (stable), so each batch pads to similar lengths and an out-of-memory
            shows in the first batch. Each batch's ``ids`` key maps rows back to samples.
        pad_token_id: id written at padded positions (masked, so any valid id; see :func:`pad_id`).
    """
    if batch_size < 1:
        raise MrdkitError(f"batch_size must be at least 1, got {batch_size}")
    order = list(encoded)
    if sort_by_length:
        order.sort(key=lambda e: -len(e.input_ids))
    for start in range(0, len(order), batch_size):
        yield collate(order[start:start + batch_size], pad_token_id)
