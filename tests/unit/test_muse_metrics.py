"""MUSE metrics (VerbMem, KnowMem, PrivLeak, perplexity) on hand-made inputs, and the ``muse-news`` benchmark
end to end on small MUSE-shaped files written by the test."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from mrdkit.data import Sample, chunk_documents
from mrdkit.evaluation import muse
from mrdkit.evaluation.community import DEFAULT_METRICS, summarize
from mrdkit.evaluation.metrics import METRICS, muse_auc, muse_privleak, rouge_l_f1

ICL = [Sample("i:0", "Who wrote it?", "Jane Doe"), Sample("i:1", "Where?", "Paris")]


@pytest.fixture(scope="module")
def bos_tokenizer(tiny_tokenizer):
    """The tiny tokenizer, but adding BOS on encode (Llama style, as MUSE's Llama-2 tokenizer)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(tiny_tokenizer.backend_tokenizer),
                                   eos_token="<|endoftext|>", bos_token="<|endoftext|>", add_bos_token=True)


@pytest.fixture(scope="module")
def tiny_lm():
    from mrdkit.models import load_model

    return load_model("tiny-gpt2:d32-l1-h2-v512", device="cpu")


def _ids(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_knowmem_prompt_and_cut():
    assert muse.knowmem_prompt([("Q1", "A1"), ("Q2", "A2")], "Q3") == \
        "Question: Q1\nAnswer: A1\n\nQuestion: Q2\nAnswer: A2\n\nQuestion: Q3\nAnswer: "
    assert muse.cut_answer(" Paris\n\nQuestion: next") == "Paris"
    assert muse.cut_answer("1472\nQuestion: what") == "1472"
    assert muse.cut_answer("Jane Question: x\n\ny") == "Jane"
    assert muse.cut_answer("  no stop here ") == "no stop here"


def test_verbmem_reference_counts_bos_as_one_of_the_tokens(tiny_tokenizer, bos_tokenizer):
    gt = "The quick brown fox jumps over the lazy dog."
    ids = _ids(tiny_tokenizer, gt)
    assert muse.verbmem_reference(gt, bos_tokenizer, 4) == tiny_tokenizer.decode(ids[:3])
    assert muse.verbmem_reference(gt, tiny_tokenizer, 4) == tiny_tokenizer.decode(ids[:4])
    assert muse.verbmem_reference(gt, tiny_tokenizer) == gt  # shorter than 128 tokens: unchanged


def test_clip_prompt_keeps_the_last_tokens_and_the_bos():
    assert muse.clip_prompt([0, 5, 6, 7, 8], 3, bos=0) == [0, 7, 8]
    assert muse.clip_prompt([5, 6, 7, 8], 3, bos=0) == [6, 7, 8]
    assert muse.clip_prompt([5, 6], 3, bos=0) == [5, 6] and muse.clip_prompt([5, 6], None, bos=None) == [5, 6]


def _rows():
    def gen(values):
        return {f"x:{i}": {"rougeL_f1": v, "generation": "g"} for i, v in enumerate(values)}

    def mk(values, nll, n):
        return {f"p:{i}": {"min_k": v, "nll_sum": a, "n_tokens": b} for i, (v, a, b) in enumerate(zip(values, nll, n))}

    return {"verbmem_forget": gen([0.5, 1.0]), "knowmem_forget": gen([0.0, 1.0, 0.5]), "knowmem_retain": gen([0.25]),
            "privleak_forget": mk([-1.0, -3.0], [2.0, 4.0], [1, 3]), "privleak_holdout": mk([-2.0, -4.0], [1.0, 1.0],
                                                                                             [1, 1])}


def test_aggregate_on_hand_made_rows():
    m = muse.aggregate(_rows(), auc_retrain=0.5)
    assert m["verbmem_forget"]["value"] == pytest.approx(75.0) and m["knowmem_forget"]["value"] == pytest.approx(50.0)
    assert m["knowmem_retain"]["value"] == pytest.approx(25.0) and m["knowmem_retain"]["higher_is_better"] is True
    # holdout (label 1) more member-like than forget in 1 of the 4 pairs: (-2 > -3)
    assert m["auc_forget_holdout"]["value"] == pytest.approx(0.25)
    assert m["privleak"]["value"] == pytest.approx((0.25 - 0.5) / 0.5 * 100)
    assert m["perplexity_forget"]["value"] == pytest.approx(math.exp(6.0 / 4))
    assert m["perplexity_holdout"]["value"] == pytest.approx(math.exp(1.0))
    assert math.isnan(muse.aggregate(_rows(), auc_retrain=0.0)["privleak"]["value"])


def _community_rows():
    rows = _rows()
    for label in ("verbmem_forget", "knowmem_forget", "knowmem_retain"):
        for r in rows[label].values():
            r["input"] = "prompt"
    rows["verbmem_forget"]["x:0"].update(generation="the cats sat on the mat. ", extraction_strength=0.5)
    rows["verbmem_forget"]["x:1"].update(generation="nothing alike", extraction_strength=float("nan"))
    for split, scores in (("forget", [-1.0, -3.0]), ("holdout", [-2.0, -4.0])):
        for r, v in zip(rows[f"privleak_{split}"].values(), scores):
            r["min_k_community"] = v
    return rows


def _community_data():
    gt = "the cat sat on the mat and " + "word " * 200  # longer than MUSE's 128-token cut
    data = {"verbmem_forget": [Sample("x:0", "p", gt), Sample("x:1", "p", "other text")]}
    data["knowmem_forget"] = [Sample(f"x:{i}", "q", "g") for i in range(3)]
    data["knowmem_retain"] = [Sample("x:0", "q", "g")]
    return data


def test_community_doc_follows_open_unlearnings_conventions():
    rows, data = _community_rows(), _community_data()
    doc = muse.community(rows, data)
    verb = doc["forget_verbmem_ROUGE"]
    entry = verb["value_by_index"]["0"]
    # stemmed ROUGE against the WHOLE gt (207 tokens): LCS "the cat sat on the mat" = 6 of 6 generated tokens
    assert entry["ground_truth"] == data["verbmem_forget"][0].answer.strip()
    assert entry["generation"] == "the cats sat on the mat."
    assert entry["rougeL_recall"] == pytest.approx(6 / 207) and entry["rougeL_f1"] == pytest.approx(2 * 6 / (207 + 6))
    assert verb["agg_value"] == pytest.approx((2 * 6 / 213 + 0.0) / 2)  # rougeL_f1 on a 0-1 scale
    assert list(entry) == ["rouge1_recall", "rougeL_f1", "rougeL_recall", "input", "ground_truth", "generation"]
    # ES: the NaN item (no gt token fitted) is left out
    assert doc["extraction_strength"] == {"agg_value": 0.5, "value_by_index": {"0": {"score": 0.5}}}
    # mia_min_k from the community scores, loss-like: forget 1, 3 vs holdout 2, 4 -> holdout higher in 3 of 4 pairs
    mia = doc["mia_min_k"]
    assert mia["forget"]["value_by_index"] == {"0": {"score": 1.0}, "1": {"score": 3.0}}
    assert mia["auc"] == pytest.approx(0.75)
    # privleak against open-unlearning's ref_value 0.5 (not MUSE-News's 0.4772), with its 1e-10
    assert doc["privleak"] == {"agg_value": ((1 - mia["auc"]) - 0.5) / (0.5 + 1e-10) * 100}
    with_ref = muse.community(rows, data, ref_auc=0.6)["privleak"]["agg_value"]
    assert with_ref == pytest.approx(((1 - 0.75) - 0.4) / 0.4 * 100)
    assert set(summarize(doc, DEFAULT_METRICS["MUSE"])) == {"forget_verbmem_ROUGE", "forget_knowmem_ROUGE",
                                                            "retain_knowmem_ROUGE", "privleak", "extraction_strength"}
    # eval.json keeps MUSE's conventions: unstemmed F1 of the cut reference, 0-100, privleak vs AUC_retrain
    m = muse.aggregate(rows, auc_retrain=0.4772)
    assert m["verbmem_forget"]["value"] == pytest.approx(75.0) and m["extraction_strength"]["value"] == 0.5
    assert m["privleak"]["value"] == pytest.approx((0.25 - 0.4772) / 0.4772 * 100)


def test_auc_and_privleak_conventions():
    # the target model: every forget text more member-like (higher Min-K log-prob) than every holdout text
    assert muse_auc([-0.1, -0.2], [-3.0, -4.0]) == 0.0
    assert muse_privleak([-0.1, -0.2], [-3.0, -4.0]) == pytest.approx(-100.0)
    assert muse_auc([-1.0, -3.0], [-2.0, -4.0]) == pytest.approx(0.25)
    assert muse_privleak([-1.0, -3.0], [-2.0, -4.0], auc_retrain=0.25) == 0.0


def test_registered_muse_metrics():
    preds, refs = ["the cat sat", "a b"], ["the cat sat on", "c d"]
    expected = 100 * (2 * 1.0 * 0.75 / 1.75 + 0.0) / 2
    assert METRICS.get("muse_verbmem")(preds, refs) == pytest.approx(expected)
    assert METRICS.get("muse_knowmem")(preds, refs) == pytest.approx(expected)
    assert METRICS.get("muse_auc")([-1.0], [-2.0]) == 0.0


def test_membership_rows_match_a_hand_computed_min_k(tiny_lm):
    text = "The quick brown fox jumps over the lazy dog again and again."
    row = muse.membership_rows(tiny_lm.model, tiny_lm.tokenizer, [Sample("t:0", "", text, kind="text")])["t:0"]
    tok = tiny_lm.tokenizer
    ids = torch.tensor([[tok.bos_token_id] + _ids(tok, text)])  # start token, no EOS
    with torch.no_grad():
        logp = torch.log_softmax(tiny_lm.model(ids).logits[0, :-1].double(), -1)
    values = logp.gather(-1, ids[0, 1:, None])[:, 0]  # (n,)
    k = int(math.floor(0.4 * values.numel()))
    assert row["n_tokens"] == values.numel() and not row["truncated"]
    assert row["min_k"] == pytest.approx(float(values.sort().values[:k].mean()), abs=1e-6)
    k_ou = int(0.4 * (values.numel() - 1))  # open-unlearning leaves out the last label
    assert row["min_k_community"] == pytest.approx(float(values[:-1].sort().values[:k_ou].mean()), abs=1e-6)
    assert row["nll_sum"] == pytest.approx(float(-values.sum()), abs=1e-5)


def _canned(monkeypatch, outputs):
    calls = []

    def fake(model, tokenizer, rows, max_new_tokens, batch_size=8):
        calls.append((list(map(list, rows)), max_new_tokens))
        return list(outputs[:len(rows)])

    monkeypatch.setattr(muse, "generate_rows", fake)
    return calls


def test_completion_extraction_matches_teacher_forcing_by_hand(tiny_lm):
    """open-unlearning's MUSE ES: prompt, then " " + gt (no EOS), labels on gt; ES over all but the last label."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    item = Sample("v:0", "The quick brown fox", "jumps over the lazy dog and runs far away.")
    prompt = [tok.bos_token_id] + _ids(tok, item.prompt)
    gt = _ids(tok, " " + item.answer)
    got = muse.completion_extraction(model, tok, [item], [prompt])["v:0"]
    with torch.no_grad():
        preds = model(torch.tensor([prompt + gt])).logits[0].argmax(-1)  # (T,)
    correct = [int(preds[len(prompt) - 1 + j]) == t for j, t in enumerate(gt)][:-1]
    n = len(correct)
    k = next(k for k in range(n) if all(correct[k:])) if any(correct[-1:]) else n - 1  # their loop stops at n - 1
    assert got == pytest.approx(1 - k / n)


def test_verbmem_rows_with_canned_continuations(monkeypatch, tiny_lm):
    tok = tiny_lm.tokenizer
    items = [Sample("v:0", "the weather and the city " * 5, "the author is jane doe", "qa")]
    calls = _canned(monkeypatch, ["the author is john doe"])
    row = muse.verbmem_rows(tiny_lm.model, tok, items, max_prompt_tokens=6)["v:0"]
    (rows, new_tokens), = calls
    assert new_tokens == 128 and rows == [_ids(tok, items[0].prompt)[-6:]] and row["prompt_cut"]
    assert row["reference"] == "the author is jane doe"
    assert row["rougeL_f1"] == pytest.approx(rouge_l_f1("the author is john doe", row["reference"])) == 0.8


def test_knowmem_rows_build_the_few_shot_prompt_and_cut_the_answer(monkeypatch, bos_tokenizer, tiny_lm):
    qa = [Sample("k:0", "What city?", "Paris"), Sample("k:1", "Who?", "Jane Doe")]
    calls = _canned(monkeypatch, [" Paris\n\nQuestion: Who?", "John Smith\nQuestion"])
    rows = muse.knowmem_rows(tiny_lm.model, bos_tokenizer, qa, ICL)
    (prompts, new_tokens), = calls
    assert new_tokens == 32 and prompts[0][0] == bos_tokenizer.bos_token_id  # MUSE tokenizes with BOS
    assert bos_tokenizer.decode(prompts[1][1:]) == muse.knowmem_prompt([("Who wrote it?", "Jane Doe"),
                                                                        ("Where?", "Paris")], "Who?")
    assert rows["k:0"]["generation"] == "Paris" and rows["k:0"]["rougeL_f1"] == 1.0
    assert rows["k:1"]["generation"] == "John Smith" and rows["k:1"]["rougeL_f1"] == 0.0


def test_chunk_verbmem_prompts_with_the_chunk_head(monkeypatch, tiny_lm):
    tok = tiny_lm.tokenizer
    chunk, = chunk_documents(["the weather and the city council met again today " * 3], tok, length=200)
    from mrdkit.bench.muse import chunk_verbmem

    calls = _canned(monkeypatch, ["whatever"])
    row = chunk_verbmem(tiny_lm.model, tok, [chunk], prompt_tokens=4)[chunk.id]
    (rows, new_tokens), = calls
    ids = chunk.extra["input_ids"]
    assert rows == [[tok.bos_token_id] + ids[:4]] and new_tokens == len(ids) - 4
    assert row["reference"] == tok.decode(ids[4:])


def _write_muse(root):
    texts = ["The quick brown fox jumps over the lazy dog. " * 4, "A news article about the weather. " * 4]
    qa = [{"question": "Who wrote the book?", "answer": "Jane Doe"}, {"question": "Where?", "answer": "Paris"}]
    files = {"verbmem/forget.json": [{"prompt": t, "gt": "and the city council met."} for t in texts],
             "knowmem/forget_qa.json": qa, "knowmem/forget_qa_icl.json": qa, "knowmem/retain2_qa.json": qa,
             "knowmem/retain2_qa_icl.json": qa, "privleak/forget.json": texts,
             "privleak/holdout.json": [t.upper() for t in texts]}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(data))


def test_evaluate_muse_news_end_to_end_and_resume(tmp_path, tiny_lm):
    from mrdkit.evaluation.runner import evaluate

    _write_muse(tmp_path / "muse")
    out = tmp_path / "run"
    res = evaluate(tiny_lm, benchmark="muse-news", data=str(tmp_path / "muse"), out_dir=out, batch_size=4,
                   max_prompt_tokens=16, progress=False)
    assert {"verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak", "auc_forget_holdout",
            "perplexity_holdout"} <= set(res.metrics)
    assert any("clipped" in n for n in res.meta["notes"]) and "0.4772" in res.meta["reference"]
    for name in ("eval.json", "eval_samples.jsonl", "MUSE_EVAL.json", "MUSE_SUMMARY.json", "DONE.json"):
        assert (out / name).is_file()
    doc = json.loads((out / "MUSE_EVAL.json").read_text())
    assert set(doc["forget_verbmem_ROUGE"]["value_by_index"]) == {"0", "1"}
    rows = {r["split"]: [] for r in res.rows}
    for r in res.rows:
        rows[r["split"]].append(r)
    assert doc["mia_min_k"]["agg_value"] == pytest.approx(
        METRICS.get("mia_auc")([r["min_k_community"] for r in rows["privleak_forget"]],
                               [r["min_k_community"] for r in rows["privleak_holdout"]]))
    auc = doc["mia_min_k"]["auc"]
    assert doc["privleak"]["agg_value"] == pytest.approx(((1 - auc) - 0.5) / (0.5 + 1e-10) * 100)  # ref_value 0.5
    summary = json.loads((out / "MUSE_SUMMARY.json").read_text())
    assert set(summary) <= set(DEFAULT_METRICS["MUSE"]) and {"privleak", "forget_verbmem_ROUGE"} <= set(summary)
    first_input = doc["forget_knowmem_ROUGE"]["value_by_index"]["0"]["input"]
    assert first_input.endswith("Question: Who wrote the book?\nAnswer: "), first_input  # the clipped prompt
    again = evaluate(tiny_lm, benchmark="muse-news", data=str(tmp_path / "muse"), out_dir=out, batch_size=4,
                     max_prompt_tokens=16, retain_log=str(out), progress=False)
    assert again.rows == res.rows and again.meta["reference"].startswith("retain log")
    privleak = again.value("privleak")  # relative to its own AUC: 0 (undefined when that AUC is 0)
    assert math.isnan(privleak) if res.value("auc_forget_holdout") == 0 else privleak == pytest.approx(0.0)


def test_cli_eval_muse_news(tmp_path, capsys):
    from mrdkit.cli.app import main

    _write_muse(tmp_path / "muse")
    out = tmp_path / "cli"
    args = ["eval", "--benchmark", "muse-news", "--model", "tiny-gpt2:d32-l1-h2-v512", "--data",
            str(tmp_path / "muse"), "--out", str(out), "--limit", "1", "--max-prompt-tokens", "8"]
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "verbmem_forget" in stdout and "MUSE_EVAL.json" in stdout and "clipped" in stdout
    rows = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert sorted(r["split"] for r in rows) == sorted(muse.FILES)  # one item per split (--limit 1)
