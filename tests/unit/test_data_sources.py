"""Named sources (wmdp, wmdp-corpus, muse, safe) on fixture snapshots written in each hub dataset's exact layout."""

from __future__ import annotations

import json

import pytest

from helpers import assert_ok, assert_user_error, run_cli_inprocess
from hubfixtures import write_all
from mrdkit.data import load_samples
from mrdkit.data.sources import SOURCES, muse_folder, named_source
from mrdkit.errors import MrdkitError

EVERY_SOURCE = ["wmdp:bio", "wmdp:chem", "wmdp:cyber", "wmdp-corpus:cyber-forget", "wmdp-corpus:bio-retain",
                "muse:news:forget", "muse:books:retain1", "muse:news:knowmem/forget_qa", "muse:books:verbmem/forget",
                "muse:news:privleak/holdout", "safe:forget", "safe:retain:test"]


@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("hub"))


@pytest.fixture
def mirror(mirror_root, monkeypatch):
    monkeypatch.setenv("MRDKIT_HUB_MIRROR", str(mirror_root))
    return mirror_root


def test_wmdp_is_multiple_choice_with_the_hub_columns(mirror):
    samples = load_samples("wmdp:bio")
    assert [s.id for s in samples[:2]] == ["wmdp_bio:0", "wmdp_bio:1"]
    first = samples[1]
    assert first.kind == "mcq" and first.prompt == "Which bio option is number 1?"
    assert first.extra["answer_index"] == 1 and first.answer == first.extra["choices"][1] == "option 1 of bio 1"


def test_wmdp_corpus_is_raw_text(mirror):
    docs = load_samples("wmdp-corpus:cyber-forget")
    assert len(docs) == 4 and {d.kind for d in docs} == {"text"} and docs[0].id == "wmdp_cyber_forget:0"
    assert docs[0].answer.endswith("cyber-forget 0.") and docs[0].prompt == ""
    retain = load_samples("wmdp-corpus:cyber-retain")
    assert docs[0].answer[:40] != retain[0].answer[:40]


def test_muse_splits_raw_qa_verbmem_privleak(mirror):
    raw = load_samples("muse:news:forget")
    assert raw[0].id == "muse_news_raw_forget:0" and raw[0].kind == "text"
    qa = load_samples("muse:news:knowmem/forget_qa")
    assert qa[0].kind == "qa" and qa[0].prompt == "What is item 0 of forget_qa?" and qa[0].answer == "answer 0 forget_qa"
    verb = load_samples("muse:books:verbmem/forget")
    assert verb[0].kind == "qa" and verb[0].prompt and verb[0].answer  # prompt -> continuation gt


def test_muse_retain_split_names_of_both_releases(mirror):
    """Books is written with the older retain2_qa / retain2 names: either name finds the split."""
    new_name = load_samples("muse:books:knowmem/retain_qa")
    old_name = load_samples("muse:books:knowmem/retain2_qa")
    assert [s.answer for s in new_name] == [s.answer for s in old_name]
    assert load_samples("muse:books:privleak/retain")[0].kind == "text"


def test_muse_folder_is_the_local_layout_read_by_the_muse_suite(mirror, tmp_path):
    from mrdkit.evaluation.muse import MuseConfig, load_split

    folder = muse_folder("books", tmp_path / "books")
    cfg = MuseConfig(data_dir=str(folder))
    assert len(load_split("knowmem_retain", cfg)) == 5 and len(load_split("knowmem_retain", cfg, icl=True)) == 3
    verb = load_split("verbmem_forget", cfg)[0]
    hub = load_samples("muse:books:verbmem/forget")[0]
    assert (verb.prompt, verb.answer) == (hub.prompt, hub.answer)
    assert json.loads((folder / "privleak" / "holdout.json").read_text())[0] == \
        load_samples("muse:books:privleak/holdout")[0].answer


def test_safe_unsafe_responses_forget_safe_ones_retain(mirror):
    forget, retain = load_samples("safe:forget"), load_samples("safe:retain")
    # fixture rows: 0 -> both safe, 1 -> none, 2 -> response 0, 3 -> response 1
    assert [s.id for s in forget] == ["safe:1:0", "safe:1:1", "safe:2:1", "safe:3:0"]
    assert [s.id for s in retain] == ["safe:0:0", "safe:0:1", "safe:2:0", "safe:3:1"]
    by_id = {s.id: s for s in forget}
    assert by_id["safe:2:1"].extra["safe_response"] == "Response zero to 2."  # the safe answer to the same prompt
    assert "safe_response" not in by_id["safe:1:0"].extra  # neither response of row 1 is safe
    assert by_id["safe:3:0"].extra["severity_level"] == 2 and by_id["safe:3:0"].extra["harm_category"] == {
        "Violence": True}
    assert load_samples("safe:forget:alpaca-7b/test", limit=2)[0].id == "safe:1:0"


def test_split_argument_is_appended_and_limit_applies(mirror):
    assert named_source("muse:news", "forget") == "muse:news:forget"
    assert named_source("tofu:forget01") is None and named_source("some/hub-id") is None
    assert len(load_samples("muse:news", split="forget", limit=2)) == 2
    assert len(load_samples("wmdp", split="chem")) == 6


@pytest.mark.parametrize("spec, fragment", [
    ("wmdp:bioo", "did you mean 'bio'"),
    ("wmdp-corpus:bio-forget", "gated"),
    ("muse:poems:forget", "unknown MUSE corpus 'poems'"),
    ("muse:news:knowmem/nosuch", "split 'nosuch'"),
    ("muse:news:notes/forget", "unknown MUSE config 'notes'"),
    ("muse:news", "needs a corpus and a split"),
    ("safe", "needs an argument"),
    ("safe:maybe", "unknown SAFE role"),
])
def test_bad_names_are_one_line_errors(mirror, spec, fragment):
    with pytest.raises(MrdkitError, match=fragment.replace("(", r"\(")) as info:
        load_samples(spec)
    assert "\n" not in str(info.value)


def test_missing_config_names_the_dataset(mirror):
    with pytest.raises(MrdkitError, match=r"safe:forget:nosuch/train \(PKU-Alignment/PKU-SafeRLHF"):
        load_samples("safe:forget:nosuch/train")


def test_offline_miss_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MRDKIT_HUB_MIRROR", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-cache" / "datasets"))
    monkeypatch.chdir(tmp_path)  # no relative folder cais/wmdp either
    try:
        load_samples("wmdp:bio", limit=1)
    except MrdkitError as err:
        message = str(err)
    else:
        pytest.skip("cais/wmdp is in this machine's Hugging Face cache: no offline miss to test")
    assert "cais/wmdp" in message and "wmdp-bio" in message and "MRDKIT_HUB_MIRROR" in message
    assert "not in the Hugging Face cache" in message and "\n" not in message


def test_field_options_are_refused_for_named_sources(mirror):
    with pytest.raises(MrdkitError, match="fixed fields"):
        load_samples("wmdp:bio", question_key="q")


def test_every_source_is_registered_with_a_summary():
    assert SOURCES.names() == ["muse", "safe", "wmdp", "wmdp-corpus"]
    assert all(e.meta["summary"] and e.meta["example"] for e in SOURCES.entries())


@pytest.mark.parametrize("spec", EVERY_SOURCE)
def test_cli_data_inspect_every_named_source(mirror, spec):
    proc = run_cli_inprocess("data", "inspect", spec, "--json")
    assert_ok(proc)
    assert json.loads(proc.stdout)["count"] > 0


def test_cli_inspect_bad_source_exits_2(mirror):
    assert_user_error(run_cli_inprocess("data", "inspect", "wmdp:physics"), "unknown WMDP subject 'physics'")
    assert_user_error(run_cli_inprocess("data", "inspect", "wmdp-corpus:bio-forget"), "gated")


def test_cli_ls_lists_the_named_sources():
    proc = run_cli_inprocess("ls")
    assert_ok(proc)
    assert "data sources" in proc.stdout
    for name in ("wmdp ", "wmdp-corpus", "muse ", "safe "):
        assert name in proc.stdout


def test_cli_eval_muse_books_from_the_hub_uses_the_books_reference(mirror, tmp_path):
    """The hub's MUSE-Books runs through the local MUSE suite; PrivLeak uses MUSE's books AUC_retrain constant."""
    from helpers import SMALL_MODEL

    out = tmp_path / "muse"
    proc = run_cli_inprocess("eval", "--benchmark", "muse-books", "--model", SMALL_MODEL, "--out", out, "--limit", "2",
                             "--device", "cpu", "--batch-size", "2")
    assert_ok(proc)
    metrics = json.loads((out / "eval.json").read_text())["metrics"]
    assert metrics["privleak"]["auc_retrain"] == 0.5393
    assert metrics["verbmem_forget"]["n"] == 2 and metrics["knowmem_retain"]["n"] == 2
    assert (out / "MUSE_EVAL.json").is_file()
    meta = json.loads((out / "eval.json").read_text())["meta"]
    assert meta["data"] == "muse:books" and meta["reference"].startswith("MUSE-Books AUC_retrain constant 0.5393")


def test_cli_unlearn_chunks_raw_muse_documents(mirror, tmp_path):
    """--chunk-tokens cuts raw documents into token windows as the local MUSE-News path does."""
    from helpers import SMALL_MODEL

    out = tmp_path / "run"
    proc = run_cli_inprocess("unlearn", "--model", SMALL_MODEL, "--forget", "muse:books:forget", "--retain",
                             "muse:books:retain1", "--method", "graddiff", "--chunk-tokens", "32", "--max-steps", "1",
                             "--lr", "1e-3", "--device", "cpu", "--out", out)
    assert_ok(proc)
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["forget"]["n"] > 5 and config["chunk_tokens"] == 32  # more windows than documents
    ids = json.loads((out / "train_log.jsonl").read_text().splitlines()[1])["forget_ids"]
    assert all(i.startswith("muse_books_raw_forget:") and i.count(":") == 2 for i in ids)


def test_cli_unlearn_safe_with_safe_responses_as_idk_targets(mirror, tmp_path):
    from helpers import SMALL_MODEL

    out = tmp_path / "run"
    proc = run_cli_inprocess("unlearn", "--model", SMALL_MODEL, "--forget", "safe:forget", "--retain", "safe:retain",
                             "--idk", "safe:retain", "--method", "idk", "--max-steps", "1", "--lr", "1e-3",
                             "--device", "cpu", "--out", out)
    assert_ok(proc)
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["forget"]["n"] == 4 and config["idk_data"] == "safe:retain"


def test_accuracy_stderr():
    from mrdkit.evaluation.mcq import accuracy_stderr

    assert accuracy_stderr([True]) is None and accuracy_stderr([True, True]) == 0.0
    assert accuracy_stderr([True, False, True, False]) == pytest.approx((1 / 3) ** 0.5 / 2)


def test_cli_eval_mcq_on_a_named_source_reports_a_standard_error(mirror, tmp_path):
    from helpers import SMALL_MODEL

    out = tmp_path / "mcq"
    assert_ok(run_cli_inprocess("eval", "--benchmark", "mcq", "--data", "wmdp:cyber", "--model", SMALL_MODEL,
                                "--out", out, "--device", "cpu"))
    acc = json.loads((out / "eval.json").read_text())["metrics"]["multiple_choice_accuracy"]
    assert acc["n"] == 6 and acc["stderr"] is not None and 0 <= acc["value"] <= 1
