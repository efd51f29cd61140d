"""Prompt templates."""

from __future__ import annotations

import copy

import pytest

from mrdkit.data import TEMPLATES, Rendered, Sample, render
from mrdkit.errors import MrdkitError

CHAT = ("{{ bos_token }}{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
QA = Sample(id="q:0", prompt="Who wrote it?", answer="Jane.")
TEXT = Sample(id="t:0", prompt="", answer="Some raw text.", kind="text")


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)  # the session tokenizer must stay template-free
    tok.chat_template = CHAT
    return tok


def test_registered_names():
    assert TEMPLATES.names() == ["auto", "chat", "llama2", "plain", "raw"]


def test_plain_and_llama2_match_their_source_configs(tiny_tokenizer):
    """plain: open-unlearning's user_start "Question: ", user_end "\\n", asst_start "Answer: "; llama2: TOFU's and
    open-unlearning's "[INST] " + q + " [/INST]" with an empty answer tag (no space before the answer)."""
    assert render(QA, tiny_tokenizer, "plain") == Rendered("Question: Who wrote it?\nAnswer: ",
                                                           "Question: Who wrote it?\nAnswer: Jane.", "Jane.")
    assert render(QA, None, "llama2") == Rendered("[INST] Who wrote it? [/INST]", "[INST] Who wrote it? [/INST]Jane.",
                                                  "Jane.")


def test_chat_uses_tokenizer_template_for_prompt_and_conversation(chat_tokenizer):
    got = render(QA, chat_tokenizer, "chat")
    assert got.prompt == "<|endoftext|><|user|>Who wrote it?\n<|assistant|>"
    assert got.full == "<|endoftext|><|user|>Who wrote it?\n<|user|>Jane.\n"  # this toy template names no roles
    assert got.answer == "Jane." and got.special_tokens is False


def test_chat_without_template_is_an_error(tiny_tokenizer):
    with pytest.raises(MrdkitError, match="template 'chat' needs a tokenizer with a chat_template"):
        render(QA, tiny_tokenizer, "chat")


def test_auto_picks_chat_or_plain(tiny_tokenizer, chat_tokenizer):
    assert render(QA, chat_tokenizer, "auto") == render(QA, chat_tokenizer, "chat")
    assert render(QA, tiny_tokenizer, "auto") == render(QA, tiny_tokenizer, "plain")
    assert render(QA, None, "auto") == render(QA, None, "plain")


def test_raw_and_text_samples_ignore_templates(chat_tokenizer):
    assert render(QA, None, "raw") == Rendered("Who wrote it?", "Who wrote it?Jane.", "Jane.")
    for name in TEMPLATES.names():
        assert render(TEXT, chat_tokenizer, name) == Rendered("", "Some raw text.", "Some raw text.")


def test_mcq_renders_like_qa():
    mcq = Sample(id="m:0", prompt="Capital?", answer="Paris", kind="mcq",
                 extra={"choices": ["Rome", "Paris"], "answer_index": 1})
    assert render(mcq, None, "plain") == Rendered("Question: Capital?\nAnswer: ", "Question: Capital?\nAnswer: Paris",
                                                  "Paris")


def test_unknown_template_did_you_mean():
    with pytest.raises(MrdkitError, match=r"unknown template 'plian'; did you mean 'plain'"):
        render(QA, None, "plian")


def test_callable_template():
    def mine(s, tok):
        return Rendered(s.prompt + " ", s.prompt + " " + s.answer, s.answer)

    assert render(QA, None, mine).prompt == "Who wrote it? "
