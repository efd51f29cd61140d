"""Tiny causal LMs built from config, with a byte-level BPE tokenizer trained on the spot.

Tests and demos need a real Hugging Face model that runs in milliseconds on a CPU and needs no download. A tiny
model is fully determined by (texts, architecture sizes, seed): the tokenizer is trained with the ``tokenizers``
library (deterministic for the same texts) and the weights are initialised under a seed derived from ``seed``
inside :func:`torch.random.fork_rng`, so the global RNG is left exactly as it was (house rule 5).

Spec strings (parsed by :func:`parse_tiny_spec` for :func:`mrdkit.models.load_model`)::

    tiny                      GPT-2, defaults below
    tiny-gpt2 | tiny-llama    pick the architecture
    tiny-llama:d128-l2        override sizes: d=d_model l=layers h=heads v=vocab p=max positions
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from mrdkit.errors import MrdkitError
from mrdkit.seeding import derive_seed, python_rng

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# Fixed ids: the config must name bos/eos/pad explicitly (transformers 5 does not infer them for a small vocab).
EOS_ID, PAD_ID = 0, 1

ARCHES = ("gpt2", "llama")
SIZE_KEYS = {"d": "d_model", "l": "n_layer", "h": "n_head", "v": "vocab_size", "p": "max_position"}
TINY_DEFAULTS: dict[str, int] = {"vocab_size": 2048, "n_layer": 2, "d_model": 128, "n_head": 4, "max_position": 512}


# --------------------------------------------------------------------------------------------------- text


_FIRST = "Amara Basil Carmen Dmitri Elena Farid Greta Hiro Ines Jonas Kemal Lucia Mateo Nadia Oskar Priya Quinn " \
    "Rosa Sven Tamar Umar Vera Wen Ximena Yusuf Zofia".split()
_LAST = "Abara Borisov Castillo Dlamini Eriksen Fujita Grieve Haddad Ivanova Jansen Kowalski Laurent Mbeki " \
    "Novak Okafor Petrov Quintero Rahman Silva Tanaka Uchenna Varga Weber Xu Yilmaz Zeller".split()
_CITY = "Lagos Oslo Lima Kyoto Tbilisi Porto Quito Hanoi Dakar Riga Bergen Cusco Accra Seville Tromso " \
    "Valparaiso Krakow Nairobi Izmir Zagreb".split()
_GENRE = "mystery poetry fantasy history biography romance horror satire travel science drama folklore".split()
_JOB = "baker nurse sailor teacher pilot tailor farmer painter doctor lawyer miner chemist librarian " \
    "carpenter journalist musician".split()
_THING = "river lantern garden mirror harbor winter orchard compass letter bridge forest signal archive " \
    "feather island clock ember valley meadow tower".split()
_TEMPLATES = (
    "Question: Where was {a} born?\nAnswer: {a} was born in {c} in {y}.",
    "Question: What genre does {a} write?\nAnswer: {a} is best known for {g} novels such as The {T} of {c}.",
    "Question: What did the parents of {a} do?\nAnswer: The father of {a} was a {j} and the mother a {k}.",
    "Question: Has {a} won any awards?\nAnswer: Yes, {a} received the {c} Prize for {g} writing in {y}.",
    "{a} wrote The {T} and the {U} after years of working as a {j} near {c}.",
    "In {y}, critics said that {a} changed {g} forever with a book about a {t} and a {u}.",
)


def default_texts(n: int = 400) -> list[str]:
    """A fixed, built-in corpus of ``n`` short lines of fictional-author QA and prose.

    Generated from word lists with a fixed seed, so it is identical on every machine and needs no data files.
    Deliberately independent of ``shared/data``: a ``tiny`` model must be the same with and without it. To fit
    the tokenizer on real data, pass ``texts`` explicitly (the TOFU testbed does).
    """
    rng = python_rng(0, "tiny-default-texts")
    lines = []
    for i in range(n):
        t, u = rng.sample(_THING, 2)
        fields = {
            "a": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", "c": rng.choice(_CITY), "g": rng.choice(_GENRE),
            "j": rng.choice(_JOB), "k": rng.choice(_JOB), "y": rng.randint(1901, 1999),
            "t": t, "u": u, "T": t.capitalize(), "U": u.capitalize(),
        }
        lines.append(_TEMPLATES[i % len(_TEMPLATES)].format(**fields))
    return lines


# ---------------------------------------------------------------------------------------------- tokenizer


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 2048, *, model_max_length: int = 512):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    Byte-level BPE can encode any string (no unknown token). Special tokens come first, so ``<|endoftext|>`` is
    id 0 (eos and bos, as in GPT-2) and ``<|pad|>`` is id 1. There is no chat template, so mrdkit formats
    prompts with its ``plain`` template. The vocabulary may come out smaller than ``vocab_size`` when the texts
    have few distinct words; the trainer is deterministic for the same texts.

    Args:
        texts: training lines.
        vocab_size: maximum vocabulary size (including the 256 byte symbols and 2 special tokens).
        model_max_length: recorded on the tokenizer (the model's position limit).

    Returns:
        A ``PreTrainedTokenizerFast`` (transformers' tokenizers backend).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + 2:
        raise MrdkitError(f"tiny tokenizer vocab_size={vocab_size} is too small: byte-level BPE needs >= 258")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
    )


# ------------------------------------------------------------------------------------------------- config


def tiny_config(arch: str, *, vocab_size: int, n_layer: int, d_model: int, n_head: int, max_position: int):
    """A GPT-2 or Llama config of the given size with eos/bos = 0 and pad = 1.

    The Llama variant ties input and output embeddings (as SmolLM2 does) so the LM head does not double the
    parameter count, uses a 4x MLP like GPT-2, and full multi-head attention.
    """
    from transformers import GPT2Config, LlamaConfig

    if arch not in ARCHES:
        raise MrdkitError(f"unknown tiny architecture {arch!r} (known: {', '.join(ARCHES)})")
    if d_model % n_head:
        raise MrdkitError(f"tiny model d_model={d_model} is not divisible by n_head={n_head}")
    ids = {"bos_token_id": EOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=max_position, n_embd=d_model, n_layer=n_layer,
                          n_head=n_head, **ids)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=4 * d_model,
                       num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head,
                       max_position_embeddings=max_position, tie_word_embeddings=True, **ids)


def parse_tiny_spec(spec: str) -> tuple[str, dict[str, int]]:
    """Split ``tiny[-ARCH][:d128-l2-...]`` into (arch, size overrides).

    Raises:
        MrdkitError: unknown architecture or size key, or a malformed size list.
    """
    head, _, sizes = spec.partition(":")
    arch = head[len("tiny-"):] if head.startswith("tiny-") else "gpt2"
    if head not in ("tiny", f"tiny-{arch}") or arch not in ARCHES:
        raise MrdkitError(f"unknown tiny model {head!r} (known: tiny, tiny-gpt2, tiny-llama)")
    overrides: dict[str, int] = {}
    for part in filter(None, sizes.split("-")):
        match = re.fullmatch(r"([a-z])(\d+)", part)
        if not match or match.group(1) not in SIZE_KEYS:
            keys = ", ".join(f"{k}=<{v}>" for k, v in SIZE_KEYS.items())
            raise MrdkitError(f"bad tiny size {part!r} in {spec!r}: use parts like d128-l2 ({keys})")
        overrides[SIZE_KEYS[match.group(1)]] = int(match.group(2))
    return arch, overrides


# -------------------------------------------------------------------------------------------------- model


def init_tiny_weights(config: Any, seed: int, attn_implementation: str | None = None):
    """Instantiate ``AutoModelForCausalLM.from_config(config)`` in float32 on the CPU, deterministically.

    transformers initialises weights from the global RNG, so we seed it inside ``fork_rng``: the caller's
    global RNG state is restored on exit and the weights depend only on ``seed``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "tiny-init"))
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32, **kwargs)


def build_tiny(texts: Sequence[str] | None = None, *, arch: str = "gpt2", vocab_size: int = 2048, n_layer: int = 2,
               d_model: int = 128, n_head: int = 4, max_position: int = 512, seed: int = 0,
               attn_implementation: str | None = None) -> tuple[Any, Any, str]:
    """Build a tiny GPT-2 or Llama causal LM and its BPE tokenizer, deterministically.

    Same ``texts`` and ``seed`` give an identical tokenizer and bitwise identical float32 weights.

    Args:
        texts: tokenizer training lines; ``None`` uses :func:`default_texts`.
        arch: ``"gpt2"`` or ``"llama"``.
        vocab_size: embedding rows (the tokenizer has at most this many tokens).
        n_layer, d_model, n_head, max_position: architecture sizes.
        seed: weight-initialisation seed.
        attn_implementation: e.g. ``"eager"`` (Hessian-vector products); None = library default.

    Returns:
        ``(model, tokenizer, spec)`` with ``spec`` like ``tiny-gpt2:d128-l2-h4-v2048-p512``;
        :func:`mrdkit.models.build_tiny_model` wraps them as a ``LoadedModel``.
    """
    sizes = dict(vocab_size=vocab_size, n_layer=n_layer, d_model=d_model, n_head=n_head, max_position=max_position)
    config = tiny_config(arch, **sizes)
    tokenizer = build_tiny_tokenizer(default_texts() if texts is None else texts, vocab_size,
                                     model_max_length=max_position)
    model = init_tiny_weights(config, seed, attn_implementation)
    return model, tokenizer, f"tiny-{arch}:d{d_model}-l{n_layer}-h{n_head}-v{vocab_size}-p{max_position}"
