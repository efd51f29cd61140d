"""Prompt templates."""

from __future__ import annotations

import copy

import pytest

from mrdkit.data import TEMPLATES, Sample, render
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


def test_plain_and_llama2(tiny_tokenizer):
    assert render(QA, tiny_tokenizer, "plain") == ("Question: Who wrote it?\nAnswer: ", "Jane.")
    assert render(QA, None, "llama2") == ("[INST] Who wrote it? [/INST] ", "Jane.")


def test_chat_uses_tokenizer_template(chat_tokenizer):
    assert render(QA, chat_tokenizer, "chat") == ("<|endoftext|><|user|>Who wrote it?\n<|assistant|>", "Jane.")


def test_chat_without_template_is_an_error(tiny_tokenizer):
    with pytest.raises(MrdkitError, match="template 'chat' needs a tokenizer with a chat_template"):
        render(QA, tiny_tokenizer, "chat")


def test_auto_picks_chat_or_plain(tiny_tokenizer, chat_tokenizer):
    assert render(QA, chat_tokenizer, "auto") == render(QA, chat_tokenizer, "chat")
    assert render(QA, tiny_tokenizer, "auto") == render(QA, tiny_tokenizer, "plain")
    assert render(QA, None, "auto") == render(QA, None, "plain")


def test_raw_and_text_samples_ignore_templates(chat_tokenizer):
    assert render(QA, None, "raw") == ("Who wrote it?", "Jane.")
    for name in TEMPLATES.names():
        assert render(TEXT, chat_tokenizer, name) == ("", "Some raw text.")


def test_mcq_renders_like_qa():
    mcq = Sample(id="m:0", prompt="Capital?", answer="Paris", kind="mcq",
                 extra={"choices": ["Rome", "Paris"], "answer_index": 1})
    assert render(mcq, None, "plain") == ("Question: Capital?\nAnswer: ", "Paris")


def test_unknown_template_did_you_mean():
    with pytest.raises(MrdkitError, match=r"unknown template 'plian'; did you mean 'plain'"):
        render(QA, None, "plian")


def test_callable_template():
    assert render(QA, None, lambda s, tok: (s.prompt + " ", s.answer)) == ("Who wrote it? ", "Jane.")
