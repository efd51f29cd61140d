"""Prompt templates: how a sample's question is written out before the answer.

A template maps ``(sample, tokenizer)`` to a :class:`Rendered`: the prompt text, the text of the whole sequence
(prompt + answer, or, for a chat template, the whole conversation with its end-of-turn marks) and whether
tokenizing that text adds the tokenizer's own special tokens (a chat template writes its own, as
``apply_chat_template(tokenize=True)`` does). :mod:`mrdkit.data.encode` turns it into token ids. The end-of-sequence
token is not part of any template: the encoder appends it. ``mcq`` samples are rendered like ``qa`` (question, then
the text of the correct choice); showing the options is the job of the evaluation code. Raw text
(``kind="text"``) always uses ``raw``, whatever template is asked for.

The named templates follow their sources character for character (``docs/fidelity.md``):

- ``plain``: ``"Question: " + q + "\\n" + "Answer: "`` then the answer: open-unlearning's non-chat template
  (``configs/model/phi-1_5.yaml``, ``Llama-2-7b-hf.yaml``: user_start_tag ``"Question: "``, user_end_tag ``"\\n"``,
  asst_start_tag ``"Answer: "``) and TOFU's phi / stablelm / pythia tags (``config/model_config.yaml``).
- ``llama2``: ``"[INST] " + q + " [/INST]"`` then the answer with an EMPTY answer tag: TOFU's ``llama2-7b`` and
  open-unlearning's ``Llama-2-7b-chat-hf.yaml`` (which notes that a space after ``[/INST]`` tokenizes badly).
- ``chat``: the tokenizer's chat template over one user turn and one assistant turn, the prompt being the user turn
  with the generation prompt: open-unlearning's ``apply_chat_template: True`` path (``src/data/utils.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mrdkit.data.samples import Sample
from mrdkit.errors import MrdkitError
from mrdkit.registry import Registry


@dataclass(frozen=True)
class Rendered:
    """A sample written out by a template.

    Attributes:
        prompt: the text the answer follows (what a model is given to generate from).
        full: the text of the whole sequence; ``full.startswith(prompt)`` for every template but ``chat``, whose
            conversation adds end-of-turn marks after the answer.
        answer: the sample's answer text (as given, before the template).
        special_tokens: tokenize ``prompt`` / ``full`` with the tokenizer's own special tokens (its BOS); False
            for chat-template text, which writes its own.
    """

    prompt: str
    full: str
    answer: str
    special_tokens: bool = True


Template = Callable[[Sample, Any], Rendered]
TEMPLATES: Registry[Template] = Registry("template")


def _tagged(prompt: str, answer: str) -> Rendered:
    return Rendered(prompt=prompt, full=prompt + answer, answer=answer)


@TEMPLATES.register("plain", summary="'Question: {q}\\nAnswer: ' then the answer (open-unlearning / TOFU QA tags)")
def plain(sample: Sample, tokenizer: Any = None) -> Rendered:
    """``"Question: " + q + "\\n" + "Answer: "`` + answer; the format of the testbed models."""
    return _tagged(f"Question: {sample.prompt}\nAnswer: ", sample.answer)


@TEMPLATES.register("llama2", summary="'[INST] {q} [/INST]' then the answer, no space (TOFU / open-unlearning)")
def llama2(sample: Sample, tokenizer: Any = None) -> Rendered:
    """Llama-2 chat turn without a system prompt and with an empty answer tag, as TOFU's and open-unlearning's
    Llama-2 configs write it (the tokenizer adds BOS)."""
    return _tagged(f"[INST] {sample.prompt} [/INST]", sample.answer)


def _require_chat_template(tokenizer: Any) -> None:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        raise MrdkitError(f"template 'chat' needs a tokenizer with a chat_template; {name!r} has none "
                          f"(use template 'plain' or 'auto')")


@TEMPLATES.register("chat", summary="the tokenizer's chat template: one user turn, then the assistant turn")
def chat(sample: Sample, tokenizer: Any = None) -> Rendered:
    """The tokenizer's own chat template: prompt = the user turn + the generation prompt, full = the conversation
    with the assistant's answer (open-unlearning ``preprocess_chat_instance`` with ``apply_chat_template``).

    Raises:
        MrdkitError: the tokenizer has no ``chat_template``.
    """
    _require_chat_template(tokenizer)
    user = [{"role": "user", "content": sample.prompt}]
    prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": sample.answer}],
                                         add_generation_prompt=False, tokenize=False)
    return Rendered(prompt=prompt, full=full, answer=sample.answer, special_tokens=False)


@TEMPLATES.register("auto", summary="'chat' if the tokenizer has a chat template, else 'plain'")
def auto(sample: Sample, tokenizer: Any = None) -> Rendered:
    """Instruct models get their own chat format, base models the plain one."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return chat(sample, tokenizer)
    return plain(sample, tokenizer)


@TEMPLATES.register("raw", summary="prompt and answer as they are, no formatting (raw text, verbatim prompts)")
def raw(sample: Sample, tokenizer: Any = None) -> Rendered:
    """No formatting and no separator, as MUSE scores a verbatim continuation ``gt`` after its ``prompt``."""
    return _tagged(sample.prompt, sample.answer)


def resolve_template(template: str | Template, tokenizer: Any = None) -> str:
    """The template a run really uses, for its config: ``auto`` becomes ``chat`` or ``plain`` (what :func:`auto`
    picks for ``tokenizer``); a registered name stays; a callable is named by its ``__name__``."""
    if not isinstance(template, str):
        return getattr(template, "__name__", type(template).__name__)
    if template == "auto":
        return "chat" if tokenizer is not None and getattr(tokenizer, "chat_template", None) else "plain"
    return template


def render(sample: Sample, tokenizer: Any = None, template: str | Template = "auto") -> Rendered:
    """``sample`` written out by ``template`` (a registered name or a callable returning :class:`Rendered`).

    Raw-text samples always render with ``raw``: a question template around an empty prompt would only add
    tokens the text never had.
    """
    if sample.kind == "text":
        return raw(sample, tokenizer)
    fn = TEMPLATES.get(template) if isinstance(template, str) else template
    return fn(sample, tokenizer)
