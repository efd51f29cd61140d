"""Shared test fixtures: small, offline, fast."""

from __future__ import annotations

import os

# Tests run tiny models: one thread avoids oversubscription on small shared machines (and is deterministic).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MRDKIT_PROGRESS", "0")

import pytest  # noqa: E402

TOKENIZER_TEXTS = [
    "Question: Who wrote the book?\nAnswer: The author is Jane Doe, born in Paris.",
    "Question: What genre does she write in?\nAnswer: She writes mystery novels and short stories.",
    "The quick brown fox jumps over the lazy dog. A news article about the weather and the city.",
]


def build_test_tokenizer(vocab_size: int = 300):
    """A byte-level BPE (GPT-2 style: no BOS added on encode) with ``<|endoftext|>`` as bos/eos and ``<pad>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(TOKENIZER_TEXTS * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<pad>",
                                   bos_token="<|endoftext|>")


#: A word-level vocabulary over GPT-2's byte-level pre-tokens: every token id below can be written out by hand.
WORD_VOCAB = ["<|endoftext|>", "<pad>", "[UNK]", "Question", ":", "ĠWho", "Ġwrote", "Ġit", "?", "Ċ", "Answer",
              "Ġ", "ĠJane", ".", "[", "INST", "]", "Ġ[/", "Jane", "<|", "user", "|>", "assistant", "Who"]


def build_word_tokenizer(adds_bos: bool = False):
    """A word-level tokenizer with GPT-2's byte-level pre-tokenization (``"Answer: Jane"`` -> ``Answer`` ``:``
    ``ĠJane``; ``"Answer: "`` -> ``Answer`` ``:`` ``Ġ``), ids = positions in :data:`WORD_VOCAB`; ``adds_bos``: the
    tokenizer puts ``<|endoftext|>`` (id 0) first, as Llama's puts ``<s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(WORD_VOCAB)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    if adds_bos:
        core.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A",
                                                            special_tokens=[("<|endoftext|>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<pad>", unk_token="[UNK]")


@pytest.fixture(scope="session")
def word_tokenizer():
    """:func:`build_word_tokenizer` (session-wide: do not mutate; deep-copy it first)."""
    return build_word_tokenizer()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A ~300-token byte-level BPE tokenizer (session-wide: do not mutate; deep-copy it first)."""
    return build_test_tokenizer()


@pytest.fixture(scope="session")
def tofu_dir():
    """The local TOFU folder; skips the test when the shared data is not there."""
    from mrdkit.errors import MrdkitError
    from mrdkit.paths import tofu_dir as find

    try:
        path = find()
    except MrdkitError:
        pytest.skip("shared/data not found")
    if not (path / "full.json").is_file():
        pytest.skip(f"TOFU data not found at {path}")
    return path
