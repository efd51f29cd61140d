"""Samples -> token ids and labels -> padded batches for :func:`mrdkit.logprob.token_logprobs`.

Encoding rules (one place, so scoring, unlearning, fine-tuning and evaluation see identical tokens):

- **QA samples, ``encoding="joint"`` (default)**: the rendered sequence (:func:`mrdkit.data.templates.render`) is
  tokenized as ONE string, as TOFU's ``data_module.py`` and open-unlearning's ``preprocess_chat_instance`` do (with
  the tokenizer's own special tokens, e.g. Llama's BOS; a chat template's text writes its own). The answer starts
  at the first token where that tokenization leaves the prompt's own tokenization: a token that straddles the seam
  (``Answer:`` + ``ĠThe``, where the prompt alone ends in ``Ġ``) belongs to the answer, so every answer word is
  scored.
- **``encoding="community"``** (community-exact): the same tokens, but the first ``len(tokenize(prompt))`` positions are
  masked, exactly as TOFU and open-unlearning mask. With a prompt that ends in a space (``"Answer: "``) the
  straddling token is then masked too: the first answer word is not scored. Use it when numbers must line up with
  published open-unlearning logs.
- **``encoding="separate"``** (mrdkit before 0.2): prompt and answer tokenized separately without special tokens
  and concatenated, BOS first where the tokenizer adds one; the seam tokens differ from the joint tokenization.
- **Raw text** (``kind="text"``): tokenized alone; the sequence starts with BOS, or EOS when there is no BOS
  (lm-evaluation-harness's convention for GPT-2-style models), so that its first token has a context and is
  scored. Chunks (:mod:`mrdkit.data.chunking`) carry their window's token ids, used instead of re-tokenizing.
- EOS is appended when ``add_eos`` and the sequence does not already end with it (open-unlearning's rule), except
  after a raw-text chunk that does not end its document (``extra["ends_document"] is False``).
- Labels (``-100`` = not scored): position 0 never (nothing predicts it). ``token_set="answer"``: the answer tokens
  and EOS (TOFU's loss and metrics). ``"all"``: every token after the first up to, not including, the first EOS:
  what the MRD authors' code scores (paper-notes section 1). ``"all_eos"``: every token after the first, EOS too.
- Sequences longer than ``max_length`` are cut on the right; one warning counts them.
- Padding is on the right; a tokenizer without a pad token pads with EOS (:func:`pad_id`). Padded positions
  have attention 0 and label -100, so the pad id never changes a result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from mrdkit.data.samples import Sample
from mrdkit.data.templates import Rendered, Template, render
from mrdkit.errors import MrdkitError

IGNORE_INDEX = -100
TOKEN_SETS = ("answer", "all", "all_eos")
ENCODINGS = ("joint", "community", "separate")


@dataclass
class EncodedSample:
    """Token ids of one sample and the labels scored on it.

    Attributes:
        id: the sample id.
        input_ids: the sequence (start token / BOS if any, prompt, answer, EOS).
        labels: same length; ``-100`` where not scored.
        truncated: the sequence was cut to ``max_length``.
        answer_start: index of the first answer token in ``input_ids``.
    """

    id: str
    input_ids: list[int]
    labels: list[int]
    truncated: bool
    answer_start: int = 0


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


def check_options(token_set: str, encoding: str) -> None:
    """One-line errors for an unknown token set or encoding."""
    if token_set not in TOKEN_SETS:
        raise MrdkitError(f"unknown token_set {token_set!r} (known: {', '.join(TOKEN_SETS)})")
    if encoding not in ENCODINGS:
        raise MrdkitError(f"unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})")


def _tokenize(tokenizer: Any, texts: list[str], special: bool = False) -> list[list[int]]:
    """Ids of each text (one batched call: fast tokenizers run it in Rust)."""
    if not texts:
        return []
    # verbose=False: over-long samples are cut (and counted in one warning) by encode_samples, so transformers'
    # "Token indices sequence length is longer ... indexing errors" warning would only contradict it
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=special, verbose=False)["input_ids"]]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _start_ids(tokenizer: Any, prompt_ids: list[int], adds_bos: bool) -> list[int]:
    """The start token of a separately-encoded sequence (module docstring), or nothing."""
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    if adds_bos:
        return [] if prompt_ids[:1] == [bos] else [bos]
    if not prompt_ids:
        start = bos if bos is not None else eos
        return [start] if start is not None else []
    return []


def _eos(tokenizer: Any, add_eos: bool) -> list[int]:
    if not add_eos:
        return []
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise MrdkitError("tokenizer has no eos token; pass add_eos=False")
    return [int(eos)]


def _text_ids(samples: Sequence[Sample], tokenizer: Any) -> list[list[int]]:
    """Ids of raw-text samples: the ids a chunk carries when this tokenizer made them, else the tokenized text
    (with one warning if chunks of another tokenizer had to be re-tokenized)."""
    ids = _tokenize(tokenizer, [s.answer for s in samples])
    if not any("input_ids" in s.extra for s in samples):
        return ids
    from mrdkit.data.chunking import pretokenized_ids, tokenizer_fingerprint

    fingerprint, foreign = tokenizer_fingerprint(tokenizer), 0
    for i, s in enumerate(samples):
        carried = pretokenized_ids(s, fingerprint)
        foreign += carried is None and "input_ids" in s.extra
        ids[i] = carried if carried is not None else ids[i]
    if foreign:
        warnings.warn(f"{foreign} text chunks carry token ids of another tokenizer: their text was re-tokenized",
                      stacklevel=3)
    return ids


def _joint_ids(rendered: list[Rendered], tokenizer: Any, encoding: str) -> list[tuple[list[int], int]]:
    """``(ids, answer start)`` of each QA sample tokenized as one string (module docstring)."""
    out = []
    for special in (True, False):  # one batched call per kind of text
        rows = [i for i, r in enumerate(rendered) if r.special_tokens == special]
        fulls = _tokenize(tokenizer, [rendered[i].full for i in rows], special)
        prompts = _tokenize(tokenizer, [rendered[i].prompt for i in rows], special)
        for i, full, prompt in zip(rows, fulls, prompts):
            start = len(prompt) if encoding == "community" else common_prefix(full, prompt)
            out.append((i, full, start))
    return [(full, start) for _, full, start in sorted(out)]


def _separate_ids(rendered: list[Rendered], tokenizer: Any) -> list[tuple[list[int], int]]:
    """``(ids, answer start)`` with prompt and answer tokenized apart (the ``separate`` encoding)."""
    adds_bos = tokenizer_adds_bos(tokenizer)
    prompts = _tokenize(tokenizer, [r.prompt for r in rendered])
    answers = _tokenize(tokenizer, [r.answer for r in rendered])
    out = []
    for p, a in zip(prompts, answers):
        head = _start_ids(tokenizer, p, adds_bos) + p
        out.append((head + a, len(head)))
    return out


def _text_rows(samples: Sequence[Sample], tokenizer: Any) -> list[tuple[list[int], int]]:
    adds_bos = tokenizer_adds_bos(tokenizer)
    return [(_start_ids(tokenizer, [], adds_bos) + ids, 0) for ids in _text_ids(samples, tokenizer)]


def _labels(ids: list[int], start: int, token_set: str, eos: int | None) -> list[int]:
    """Labels of one sequence (module docstring); position 0 is never scored."""
    masked = max(1, start) if token_set == "answer" else 1
    labels = [IGNORE_INDEX] * min(masked, len(ids)) + ids[masked:]
    if token_set == "all" and eos is not None and eos in ids[1:]:
        cut = ids.index(eos, 1)  # the authors' walk stops before the first EOS
        labels[cut:] = [IGNORE_INDEX] * (len(labels) - cut)
    return labels


def _finish(sample_id: str, ids: list[int], start: int, token_set: str, max_length: int,
            eos: int | None) -> EncodedSample:
    labels = _labels(ids, start, token_set, eos)
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        why = (f"none of its answer tokens fit in max_length={max_length} (prompt: {start} tokens); raise "
               f"max_length") if truncated else "it has no tokens to score (empty answer?)"
        raise MrdkitError(f"sample {sample_id!r}: {why}")
    return EncodedSample(id=sample_id, input_ids=ids, labels=labels, truncated=truncated, answer_start=start)


def sequences(samples: Sequence[Sample], tokenizer: Any, *, template: str | Template = "auto",
              encoding: str = "joint", add_eos: bool = True) -> list[tuple[list[int], int]]:
    """``(ids, answer start)`` of every sample in order, EOS appended (module docstring); no labels yet."""
    qa = [i for i, s in enumerate(samples) if s.kind != "text"]
    text = [i for i, s in enumerate(samples) if s.kind == "text"]
    rendered = [render(samples[i], tokenizer, template) for i in qa]
    qa_rows = (_separate_ids(rendered, tokenizer) if encoding == "separate"
               else _joint_ids(rendered, tokenizer, encoding))
    rows: dict[int, tuple[list[int], int]] = dict(zip(qa, qa_rows))
    rows.update(zip(text, _text_rows([samples[i] for i in text], tokenizer)))
    eos = _eos(tokenizer, add_eos)
    out = []
    for i, s in enumerate(samples):
        ids, start = rows[i]
        ends = s.kind != "text" or s.extra.get("ends_document", True)
        out.append((ids + eos if eos and ends and ids[-1:] != eos else ids, start))
    return out


def encode_samples(samples: Sequence[Sample], tokenizer: Any, *, template: str | Template = "auto",
                   token_set: str = "answer", max_length: int = 512, add_eos: bool = True,
                   encoding: str = "joint") -> list[EncodedSample]:
    """Tokenize samples into ids and labels (rules in the module docstring).

    Args:
        samples: the samples; raw-text samples always use the ``raw`` template and their own start rule.
        tokenizer: a Hugging Face tokenizer.
        template: a registered template name (``plain``, ``llama2``, ``chat``, ``auto``, ``raw``) or a callable.
        token_set: ``"answer"`` (answer + EOS), ``"all"`` (every token after the first, before the first EOS: the
            MRD authors' walk) or ``"all_eos"`` (EOS too).
        max_length: longest sequence kept; longer ones are cut on the right (one warning counts them).
        add_eos: append the EOS token after the answer.
        encoding: ``"joint"`` (default), ``"community"`` (TOFU / open-unlearning's exact mask: the first answer token
            of a prompt ending in a space is masked) or ``"separate"`` (prompt and answer tokenized apart).

    Returns:
        One :class:`EncodedSample` per sample, in order.

    Raises:
        MrdkitError: bad ``token_set`` / ``encoding`` / ``max_length``, or a sample with no scored token left.
    """
    check_options(token_set, encoding)
    if max_length < 2:
        raise MrdkitError(f"max_length must be at least 2, got {max_length}")
    eos = getattr(tokenizer, "eos_token_id", None)
    out = [_finish(s.id, ids, start, token_set, max_length, eos)
           for s, (ids, start) in zip(samples, sequences(samples, tokenizer, template=template, encoding=encoding,
                                                         add_eos=add_eos))]
    n_cut = sum(e.truncated for e in out)
    if n_cut:
        warnings.warn(f"{n_cut} of {len(out)} samples truncated to {max_length} tokens", stacklevel=2)
    return out


def prompt_token_ids(samples: Sequence[Sample], tokenizer: Any, template: str | Template = "auto",
                     encoding: str = "joint") -> list[list[int]]:
    """The ids a model generates from for each sample: what precedes the answer in :func:`encode_samples`.

    ``joint``: the tokens the whole sequence shares with the prompt's own tokenization (a prompt ending in a space
    stops before that space, which the answer's first token carries, as the model saw it in training);
    ``community``: the prompt tokenized on its own (open-unlearning's generation input, MUSE's prompts);
    ``separate``: start token + prompt. Raw text gives its start token (BOS, else EOS), so generation has a context.
    """
    check_options("answer", encoding)
    rows = sequences(samples, tokenizer, template=template, encoding=encoding, add_eos=False)
    text_start = _start_ids(tokenizer, [], tokenizer_adds_bos(tokenizer))
    out = []
    for s, (ids, start) in zip(samples, rows):
        if s.kind == "text":
            ids = text_start
        elif encoding == "community":
            r = render(s, tokenizer, template)
            ids = _tokenize(tokenizer, [r.prompt], r.special_tokens)[0]
        else:
            ids = ids[:start]
        if not ids:
            raise MrdkitError(f"sample {s.id!r}: empty prompt and a tokenizer without bos/eos: nothing to generate "
                              f"from")
        out.append(ids)
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
