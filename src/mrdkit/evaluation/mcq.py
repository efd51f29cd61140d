"""Multiple-choice accuracy (WMDP / MMLU style) and perplexity of raw text.

Multiple choice as lm-evaluation-harness scores WMDP (Li et al. 2024, arXiv:2403.03218) and MMLU (Hendrycks et
al. 2021, arXiv:2009.03300): each option is a continuation of the same prompt, the prediction is
``argmax_j log p(option_j | prompt)`` and accuracy is the fraction of questions predicted right (chance
1/#options). Two prompt formats:

- ``letters`` (lm-evaluation-harness ``wmdp``/``mmlu``): ``"{question}\\nA. {c0}\\nB. {c1}...\\nAnswer:"`` with
  continuations ``" A"``, ``" B"``, ...; one token each, so ``sum`` and ``mean`` normalisation agree.
- ``text``: ``"{question}\\nAnswer:"`` with the option texts as continuations (TOFU real-author style); use
  ``norm="mean"`` (length-normalised, lm-eval's ``acc_norm`` spirit) when options differ in length.

Accuracy comes with its standard error ``sqrt(sum_i (x_i - acc)^2 / (n - 1)) / sqrt(n)`` over the per-question hits
``x_i`` in {0, 1} (:func:`accuracy_stderr`, the formula lm-eval reports as ``acc_stderr``).

How this differs from lm-evaluation-harness (``mrd eval --benchmark lm-eval``, :mod:`mrdkit.evaluation.lmeval`),
whose numbers are the ones papers report:

- prompt: lm-eval's ``wmdp_*`` / ``mmlu_*`` tasks put a subject line first ("The following are multiple choice
  questions (with answers) about biology.") and may add few-shot examples; ``letters`` here has neither;
- template: mrdkit's ``auto`` template renders the prompt with the model's chat template when it has one
  (:mod:`mrdkit.data.templates`); lm-eval scores the raw text unless told ``apply_chat_template``;
- tokenization: lm-eval encodes context and continuation separately and moves trailing spaces of the context into
  the continuation; here the rendered prompt and the option are encoded as one answer-masked sequence;
- ties go to the first option here; lm-eval takes ``argmax`` as numpy does (also the first).

Use ``mcq`` for quick in-loop checks on any question file; report lm-eval's numbers.

Perplexity of raw text is ``exp(sum_i NLL_i / sum_i n_i)`` over every token but the first. All scoring goes
through :func:`mrdkit.evaluation.answers.answer_logprobs` (one length-sorted batched pass).
"""

from __future__ import annotations

from typing import Any, Sequence

from mrdkit.data.samples import Sample
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.answers import answer_logprobs

FORMATS = ("letters", "text")
NORMS = ("sum", "mean")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _choices(sample: Sample) -> tuple[list[str], int]:
    choices, index = sample.extra.get("choices"), sample.extra.get("answer_index")
    if sample.kind != "mcq" or not isinstance(choices, list) or not isinstance(index, int):
        raise MrdkitError(f"sample {sample.id!r} is not a multiple-choice question (needs extra['choices'] and "
                          f"extra['answer_index']; load a file with question/choices/answer fields)")
    if len(choices) > len(LETTERS):
        raise MrdkitError(f"sample {sample.id!r} has {len(choices)} choices; at most {len(LETTERS)} supported")
    return choices, index


def option_samples(sample: Sample, fmt: str = "letters") -> list[Sample]:
    """One prompt/continuation sample per option (ids ``"<id>#opt<j>"``); see the module docstring."""
    if fmt not in FORMATS:
        raise MrdkitError(f"unknown multiple-choice format {fmt!r} (known: {', '.join(FORMATS)})")
    choices, _ = _choices(sample)
    if fmt == "letters":
        listing = "".join(f"\n{LETTERS[j]}. {c}" for j, c in enumerate(choices))
        prompt, conts = f"{sample.prompt.strip()}{listing}\nAnswer:", [f" {LETTERS[j]}" for j in range(len(choices))]
    else:
        prompt, conts = f"{sample.prompt.strip()}\nAnswer:", [f" {c}" for c in choices]
    return [Sample(id=f"{sample.id}#opt{j}", prompt=prompt, answer=c) for j, c in enumerate(conts)]


def option_logprobs(model: Any, tokenizer: Any, samples: Sequence[Sample], *, fmt: str = "letters",
                    norm: str = "sum", template: str = "raw", batch_size: int = 16,
                    max_length: int = 1024) -> dict[str, list[float]]:
    """``{question_id: [log p(option_j | prompt)]}``: summed (``norm="sum"``) or per-token mean log-probs."""
    if norm not in NORMS:
        raise MrdkitError(f"unknown option normalisation {norm!r} (known: {', '.join(NORMS)})")
    options = {s.id: option_samples(s, fmt) for s in samples}
    flat = [o for opts in options.values() for o in opts]
    scores = answer_logprobs(model, tokenizer, flat, template=template, batch_size=batch_size,
                             max_length=max_length)
    by_id = {sc.id: (sc.sum_logprob if norm == "sum" else sc.mean_logprob) for sc in scores}
    return {qid: [by_id[o.id] for o in opts] for qid, opts in options.items()}


def evaluate_mcq(model: Any, tokenizer: Any, samples: Sequence[Sample], *, split: str = "mcq",
                 fmt: str = "letters", norm: str = "sum", **kwargs: Any) -> tuple[list[dict], dict[str, dict]]:
    """Multiple-choice accuracy with per-question rows.

    Returns:
        ``(rows, aggregates)``: rows ``{id, split, pred, answer_index, correct, option_logprobs}``; aggregates
        ``{"multiple_choice_accuracy": {value, higher_is_better, n, stderr}}`` via
        :func:`mrdkit.evaluation.metrics.multiple_choice_accuracy`.
    """
    from mrdkit.evaluation.metrics import multiple_choice_accuracy

    logps = option_logprobs(model, tokenizer, samples, fmt=fmt, norm=norm, **kwargs)
    answers = [_choices(s)[1] for s in samples]
    rows = []
    for s, ans in zip(samples, answers):
        opts = logps[s.id]
        pred = max(range(len(opts)), key=lambda j: (opts[j], -j))  # ties -> first option
        rows.append({"id": s.id, "split": split, "pred": pred, "answer_index": ans, "correct": pred == ans,
                     "option_logprobs": opts})
    acc = multiple_choice_accuracy([logps[s.id] for s in samples], answers)
    stderr = accuracy_stderr([r["correct"] for r in rows])
    return rows, {"multiple_choice_accuracy": {"value": acc, "higher_is_better": True, "n": len(rows),
                                               "stderr": stderr}}


def accuracy_stderr(hits: Sequence[bool]) -> float | None:
    """Standard error of an accuracy: ``sqrt(sum (x - mean)^2 / (n - 1)) / sqrt(n)``; None for fewer than 2."""
    import math

    n = len(hits)
    if n < 2:
        return None
    mean = sum(hits) / n
    return math.sqrt(sum((float(x) - mean) ** 2 for x in hits) / (n - 1) / n)


def evaluate_perplexity(model: Any, tokenizer: Any, samples: Sequence[Sample], *, split: str = "text",
                        batch_size: int = 16, max_length: int = 1024) -> tuple[list[dict], dict[str, dict]]:
    """Corpus perplexity of raw text (every token but the first is scored) with per-sample rows.

    Returns:
        ``(rows, aggregates)``: rows ``{id, split, nll_sum, n_tokens, perplexity}``; aggregates
        ``{"perplexity": {value, higher_is_better: False, n}}`` via :func:`mrdkit.evaluation.metrics.perplexity`.
    """
    import math

    from mrdkit.evaluation.metrics import perplexity

    texts = [s if s.kind == "text" else Sample(id=s.id, prompt="", answer=s.prompt + s.answer, kind="text")
             for s in samples]
    scores = answer_logprobs(model, tokenizer, texts, token_set="all", batch_size=batch_size,
                             max_length=max_length)
    rows = [{"id": sc.id, "split": split, "nll_sum": -sc.sum_logprob, "n_tokens": sc.n_tokens,
             "perplexity": math.exp(-sc.mean_logprob)} for sc in scores]
    ppl = perplexity([r["nll_sum"] for r in rows], [r["n_tokens"] for r in rows])
    return rows, {"perplexity": {"value": ppl, "higher_is_better": False, "n": len(rows)}}
