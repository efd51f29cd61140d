"""Encoding, collation and batching."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdkit.data import (
    IGNORE_INDEX,
    Sample,
    collate,
    encode_samples,
    iter_batches,
    pad_id,
    prompt_token_ids,
    render,
    tokenizer_adds_bos,
)
from mrdkit.errors import MrdkitError
from mrdkit.logprob import gather_logprobs

QA = [Sample(id=f"q:{i}", prompt=f"Who wrote book {i}?", answer="The author is Jane Doe." * (i + 1))
      for i in range(4)]
TEXT = Sample(id="t:0", prompt="", answer="The quick brown fox.", kind="text")


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# Hand-written ids (tests/conftest.py WORD_VOCAB) for "Question: Who wrote it?\nAnswer: " + "Jane." (open-unlearning's
# non-chat template, TOFU's phi tags):        Question :  ĠWho Ġwrote Ġit ?  Ċ  Answer :   ĠJane .   EOS
JOINT_PLAIN = [3, 4, 5, 6, 7, 8, 9, 10, 4, 12, 13, 0]
M = IGNORE_INDEX
WHO = Sample(id="w:0", prompt="Who wrote it?", answer="Jane.")


def test_joint_encoding_scores_the_seam_token_as_answer(word_tokenizer):
    """The whole string tokenized at once: ``Answer: Jane`` gives ``:`` ``ĠJane``; the prompt alone ends in ``Ġ``,
    so the first answer token ``ĠJane`` straddles the seam and is scored (every answer word counts)."""
    (enc,) = encode_samples([WHO], word_tokenizer, template="plain")
    assert enc.input_ids == JOINT_PLAIN
    assert enc.labels == [M] * 9 + [12, 13, 0] and enc.answer_start == 9


def test_community_encoding_masks_by_the_prompt_token_count_quirk_included(word_tokenizer):
    """TOFU / open-unlearning: mask ``len(tokenize(prompt))`` = 10 positions; ``Answer: `` alone ends in ``Ġ`` (id
    11), so position 9 (``ĠJane``) is masked too: the first answer word is not scored."""
    (enc,) = encode_samples([WHO], word_tokenizer, template="plain", encoding="community")
    assert enc.input_ids == JOINT_PLAIN
    assert enc.labels == [M] * 10 + [13, 0]


def test_separate_encoding_is_the_old_rule(word_tokenizer):
    """Prompt and answer tokenized apart: ``Ġ`` then ``Jane`` (no leading space) at the seam."""
    (enc,) = encode_samples([WHO], word_tokenizer, template="plain", encoding="separate")
    assert enc.input_ids == [3, 4, 5, 6, 7, 8, 9, 10, 4, 11, 18, 13, 0]
    assert enc.labels == [M] * 10 + [18, 13, 0]


def test_llama2_template_has_no_space_after_inst(word_tokenizer):
    """TOFU / open-unlearning Llama-2: ``"[INST] " + q + " [/INST]"`` then the answer with an empty tag."""
    (enc,) = encode_samples([WHO], word_tokenizer, template="llama2")
    #                           [   INST ]   ĠWho Ġwrote Ġit ? Ġ[/ INST ]  Jane .  EOS
    assert enc.input_ids == [14, 15, 16, 5, 6, 7, 8, 17, 15, 16, 18, 13, 0]
    assert enc.labels == [M] * 10 + [18, 13, 0]


def test_bos_adding_tokenizer_counts_its_bos_in_the_mask():
    """With a Llama-style tokenizer the BOS (here id 0) comes first and is part of the prompt's token count."""
    from conftest import build_word_tokenizer

    tok = build_word_tokenizer(adds_bos=True)
    assert tokenizer_adds_bos(tok)
    joint, community = (encode_samples([WHO], tok, template="plain", encoding=e)[0] for e in ("joint", "community"))
    assert joint.input_ids == community.input_ids == [0] + JOINT_PLAIN
    assert joint.labels == [M] * 10 + [12, 13, 0] and community.labels == [M] * 11 + [13, 0]


def test_chat_template_encodes_the_whole_conversation(word_tokenizer):
    """open-unlearning's chat path: the full conversation (answer + the template's end-of-turn text), EOS appended
    because the conversation does not end with it; the prompt is the user turn with the generation prompt."""
    tok = copy.deepcopy(word_tokenizer)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (enc,) = encode_samples([WHO], tok, template="chat")
    #                        <|  user |>  Who Ġwrote Ġit ? Ċ <| assistant |> Jane . Ċ EOS
    assert enc.input_ids == [19, 20, 21, 23, 6, 7, 8, 9, 19, 22, 21, 18, 13, 9, 0]
    assert enc.labels == [M] * 11 + [18, 13, 9, 0]


def test_token_sets_all_stops_before_eos_and_all_eos_keeps_it(word_tokenizer):
    """``all``: what the MRD authors' loop scores, every token after the first up to the first EOS (not included);
    ``all_eos``: the EOS too."""
    (all_,) = encode_samples([WHO], word_tokenizer, template="plain", token_set="all")
    (with_eos,) = encode_samples([WHO], word_tokenizer, template="plain", token_set="all_eos")
    assert all_.labels == [M] + JOINT_PLAIN[1:-1] + [M]
    assert with_eos.labels == [M] + JOINT_PLAIN[1:]


def test_prompt_ids_follow_the_encoding(word_tokenizer):
    """What generation starts from: joint = the shared prefix (up to ``:``), community = the prompt alone (ends in
    ``Ġ``, as open-unlearning generates), separate = the prompt tokens of the old rule."""
    got = {e: prompt_token_ids([WHO], word_tokenizer, "plain", e)[0] for e in ("joint", "community", "separate")}
    assert got == {"joint": JOINT_PLAIN[:9], "community": JOINT_PLAIN[:9] + [11],
                   "separate": JOINT_PLAIN[:9] + [11]}


def test_prompt_answer_boundary_on_a_real_bpe(tiny_tokenizer):
    (enc,) = encode_samples(QA[:1], tiny_tokenizer, template="plain")
    rendered = render(QA[0], tiny_tokenizer, "plain")
    assert enc.input_ids == _ids(tiny_tokenizer, rendered.full) + [tiny_tokenizer.eos_token_id]
    assert not tokenizer_adds_bos(tiny_tokenizer)  # GPT-2 style: no start token before a non-empty prompt
    scored = [t for t in enc.labels if t != IGNORE_INDEX]
    assert tiny_tokenizer.decode(scored[:-1]).strip() == QA[0].answer and not enc.truncated


def test_raw_text_gets_a_start_token_so_its_first_token_is_scored(tiny_tokenizer):
    (enc,) = encode_samples([TEXT], tiny_tokenizer, template="chat")  # text ignores the template
    text_ids = _ids(tiny_tokenizer, TEXT.answer)
    start = tiny_tokenizer.bos_token_id
    assert enc.input_ids == [start] + text_ids + [tiny_tokenizer.eos_token_id]
    assert enc.labels == [IGNORE_INDEX] + text_ids + [tiny_tokenizer.eos_token_id]


def test_add_eos_false_and_missing_eos(tiny_tokenizer):
    (enc,) = encode_samples(QA[:1], tiny_tokenizer, template="plain", add_eos=False)
    assert enc.input_ids[-1] != tiny_tokenizer.eos_token_id
    tok = copy.deepcopy(tiny_tokenizer)
    tok.eos_token = None
    with pytest.raises(MrdkitError, match="no eos token; pass add_eos=False"):
        encode_samples(QA[:1], tok, template="plain")


def test_truncation_warns_once_with_a_count(tiny_tokenizer):
    full = encode_samples(QA, tiny_tokenizer, template="plain")
    limit = sorted(len(e.input_ids) for e in full)[1]  # the two longest get cut
    with pytest.warns(UserWarning, match=rf"^2 of 4 samples truncated to {limit} tokens$") as record:
        cut = encode_samples(QA, tiny_tokenizer, template="plain", max_length=limit)
    assert len(record) == 1
    assert [e.truncated for e in cut] == [len(e.input_ids) > limit for e in full]
    for a, b in zip(full, cut):
        assert b.input_ids == a.input_ids[:limit] and b.labels == a.labels[:limit]


def test_no_answer_left_after_truncation_names_the_sample(tiny_tokenizer):
    with warnings.catch_warnings(), pytest.raises(MrdkitError, match=r"sample 'q:0': none of its answer tokens"):
        warnings.simplefilter("ignore")
        encode_samples(QA[:1], tiny_tokenizer, template="plain", max_length=4)


def test_empty_answer_without_eos_is_an_error(tiny_tokenizer):
    empty = Sample(id="e:0", prompt="Q?", answer="")
    with pytest.raises(MrdkitError, match=r"sample 'e:0': it has no tokens to score"):
        encode_samples([empty], tiny_tokenizer, template="plain", add_eos=False)
    (enc,) = encode_samples([empty], tiny_tokenizer, template="plain")  # EOS alone is scored
    assert [t for t in enc.labels if t != IGNORE_INDEX] == [tiny_tokenizer.eos_token_id]


@pytest.mark.parametrize("kwargs, match", [({"token_set": "prompt"}, "unknown token_set 'prompt'"),
                                           ({"encoding": "tofu"}, "unknown encoding 'tofu'"),
                                           ({"max_length": 1}, "max_length must be at least 2")])
def test_bad_arguments(tiny_tokenizer, kwargs, match):
    with pytest.raises(MrdkitError, match=match):
        encode_samples(QA, tiny_tokenizer, **kwargs)


def test_collate_right_pads(tiny_tokenizer):
    enc = encode_samples(QA[:2] + [TEXT], tiny_tokenizer, template="plain")
    batch = collate(enc, pad_id(tiny_tokenizer))
    width = max(len(e.input_ids) for e in enc)
    assert batch["ids"] == ["q:0", "q:1", "t:0"]
    for key in ("input_ids", "attention_mask", "labels"):
        assert batch[key].shape == (3, width) and batch[key].dtype == torch.long
    for row, e in enumerate(enc):
        n = len(e.input_ids)
        assert batch["input_ids"][row, :n].tolist() == e.input_ids
        assert batch["labels"][row, :n].tolist() == e.labels
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert set(batch["labels"][row, n:].tolist()) <= {IGNORE_INDEX}
        assert set(batch["input_ids"][row, n:].tolist()) <= {tiny_tokenizer.pad_token_id}


def test_labels_are_exactly_the_scored_tokens(tiny_tokenizer):
    enc = encode_samples(QA + [TEXT], tiny_tokenizer, template="plain", token_set="all_eos")
    batch = collate(enc, 0)
    logits = torch.randn(*batch["input_ids"].shape, len(tiny_tokenizer), generator=torch.Generator().manual_seed(0))
    counts = gather_logprobs(logits, batch["labels"]).count()
    assert counts.tolist() == [sum(t != IGNORE_INDEX for t in e.labels) for e in enc]


def test_collate_errors():
    with pytest.raises(MrdkitError, match="empty list"):
        collate([], 0)


def test_pad_id_falls_back_to_eos(tiny_tokenizer):
    assert pad_id(tiny_tokenizer) == tiny_tokenizer.pad_token_id
    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = None
    assert pad_id(tok) == tok.eos_token_id


def test_iter_batches_covers_every_sample_once(tiny_tokenizer):
    enc = encode_samples(QA + [TEXT], tiny_tokenizer, template="plain")
    by_id = {e.id: e for e in enc}
    plain = list(iter_batches(enc, 2))
    assert [b["ids"] for b in plain] == [["q:0", "q:1"], ["q:2", "q:3"], ["t:0"]]
    sorted_batches = list(iter_batches(enc, 2, sort_by_length=True, pad_token_id=1))
    ids = [i for b in sorted_batches for i in b["ids"]]
    assert sorted(ids) == sorted(by_id)
    lengths = [len(by_id[i].input_ids) for i in ids]
    assert lengths == sorted(lengths, reverse=True)
    for b in sorted_batches:
        for row, i in enumerate(b["ids"]):
            assert b["input_ids"][row, : len(by_id[i].input_ids)].tolist() == by_id[i].input_ids
    with pytest.raises(MrdkitError, match="batch_size must be at least 1"):
        next(iter_batches(enc, 0))


@settings(max_examples=40, deadline=None)
@given(prompt=st.text(max_size=30), answer=st.text(min_size=1, max_size=30),
       token_set=st.sampled_from(["answer", "all_eos"]), max_length=st.integers(2, 40),
       encoding=st.sampled_from(["joint", "separate"]))
def test_encoding_invariants(tiny_tokenizer, prompt, answer, token_set, max_length, encoding):
    sample = Sample(id="h:0", prompt=prompt, answer=answer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (enc,) = encode_samples([sample], tiny_tokenizer, template="raw", token_set=token_set,
                                    max_length=max_length, encoding=encoding)
    except MrdkitError as err:  # only legitimate failure: nothing left to score after the cut
        assert "max_length" in str(err)
        return
    assert len(enc.input_ids) == len(enc.labels) <= max_length and enc.labels[0] == IGNORE_INDEX
    assert all(lab in (IGNORE_INDEX, tok) for lab, tok in zip(enc.labels, enc.input_ids))
    scored = [i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX]
    assert scored == list(range(scored[0], len(enc.labels)))  # one contiguous block up to the end
    if token_set == "answer" and not enc.truncated and encoding == "separate":
        assert tiny_tokenizer.decode(enc.labels[scored[0]:-1]) == answer
    if token_set == "answer" and not enc.truncated and encoding == "joint":  # the seam token may carry prompt text
        assert tiny_tokenizer.decode(enc.input_ids[:-1]) == prompt + answer


def test_truncation_warns_once_without_transformers_indexing_warning():
    """A sample longer than the tokenizer's model_max_length: mrdkit cuts it and says so in one warning; transformers'
    own "Token indices sequence length is longer ... indexing errors" (logged at tokenization, before the cut)
    must not appear beside it (it would say the opposite of what happens)."""
    import logging

    from conftest import build_test_tokenizer
    from mrdkit.data import Sample, encode_samples

    tok = build_test_tokenizer()
    tok.model_max_length = 16
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with pytest.warns(UserWarning, match="1 of 1 samples truncated to 24 tokens"):
            encode_samples([Sample(id="s", prompt="Who?", answer="Jane Doe wrote the book in Paris. " * 4)],
                           tok, max_length=24)
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "indexing errors" in r.getMessage()]
