"""Prompt templates: how a sample's question is written out before the answer.

A template maps ``(sample, tokenizer)`` to ``(prompt_text, answer_text)``; :mod:`mrdkit.data.encode` tokenizes
the two separately, so the prompt/answer boundary is exact. The end-of-sequence token is not part of any
template: the encoder appends it after the answer. ``mcq`` samples are rendered like ``qa`` (question, then
the text of the correct choice); showing the options is the job of the evaluation code. Raw text
(``kind="text"``) always uses ``raw``, whatever template is asked for.
"""

from __future__ import annotations

from typing import Any, Callable

from mrdkit.data.samples import Sample
from mrdkit.errors import MrdkitError
from mrdkit.registry import Registry

Template = Callable[[Sample, Any], tuple[str, str]]
TEMPLATES: Registry[Template] = Registry("template")


@TEMPLATES.register("plain", summary="'Question: {q}\\nAnswer: ' then the answer (TOFU fine-tuning style)")
def plain(sample: Sample, tokenizer: Any = None) -> tuple[str, str]:
    """``Question: {q}\\nAnswer: `` + answer; the format of the TOFU testbed models."""
    return f"Question: {sample.prompt}\nAnswer: ", sample.answer


@TEMPLATES.register("llama2", summary="'[INST] {q} [/INST] ' then the answer (Llama-2 chat, TOFU's models)")
def llama2(sample: Sample, tokenizer: Any = None) -> tuple[str, str]:
    """Llama-2 chat turn without a system prompt, as TOFU's fine-tuned Llama-2 models use."""
    return f"[INST] {sample.prompt} [/INST] ", sample.answer


@TEMPLATES.register("chat", summary="the tokenizer's chat template, one user turn + generation prompt")
def chat(sample: Sample, tokenizer: Any = None) -> tuple[str, str]:
    """The tokenizer's own chat template applied to one user message, with the assistant header appended.

    Raises:
        MrdkitError: the tokenizer has no ``chat_template``.
    """
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        raise MrdkitError(f"template 'chat' needs a tokenizer with a chat_template; {name!r} has none "
                          f"(use template 'plain' or 'auto')")
    messages = [{"role": "user", "content": sample.prompt}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt, sample.answer


@TEMPLATES.register("auto", summary="'chat' if the tokenizer has a chat template, else 'plain'")
def auto(sample: Sample, tokenizer: Any = None) -> tuple[str, str]:
    """Instruct models get their own chat format, base models the plain one."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return chat(sample, tokenizer)
    return plain(sample, tokenizer)


@TEMPLATES.register("raw", summary="prompt and answer as they are, no formatting (raw text, verbatim prompts)")
def raw(sample: Sample, tokenizer: Any = None) -> tuple[str, str]:
    """No formatting and no separator, as MUSE scores a verbatim continuation ``gt`` after its ``prompt``."""
    return sample.prompt, sample.answer


def render(sample: Sample, tokenizer: Any = None, template: str | Template = "auto") -> tuple[str, str]:
    """``(prompt_text, answer_text)`` of ``sample`` under ``template`` (a registered name or a callable).

    Raw-text samples always render with ``raw``: a question template around an empty prompt would only add
    tokens the text never had.
    """
    if sample.kind == "text":
        return raw(sample, tokenizer)
    fn = TEMPLATES.get(template) if isinstance(template, str) else template
    return fn(sample, tokenizer)
