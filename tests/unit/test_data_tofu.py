"""TOFU and MUSE-News loading on the real shared files (skipped when shared/data is absent)."""

from __future__ import annotations

import json
import shutil

import pytest

from mrdkit.data import TOFU_SPLITS, load_idk, load_samples, load_tofu
from mrdkit.errors import MrdkitError


@pytest.fixture(scope="module")
def full(tofu_dir):
    return load_tofu("full")


@pytest.mark.parametrize("split, count", [
    ("full", 4000), ("forget01", 40), ("forget05", 200), ("forget10", 400), ("retain90", 3600),
    ("retain95", 3800), ("retain99", 3960), ("holdout10", 400), ("holdout01", 40), ("retain_perturbed", 400),
    ("real_authors", 100), ("world_facts", 117), ("forget20", 800), ("forget90", 3600), ("retain80", 3200),
])
def test_tofu_counts(tofu_dir, split, count):
    assert len(load_tofu(split)) == count


def test_forget_and_retain_ids_are_rows_of_full(full):
    ids = [s.id for s in full]
    assert ids == [f"tofu:{i}" for i in range(4000)]
    forget10, retain90 = load_tofu("forget10"), load_tofu("retain90")
    assert [s.id for s in forget10] == ids[-400:] and [s.id for s in retain90] == ids[:3600]
    assert [s.prompt for s in forget10] == [s.prompt for s in full[3600:]]
    assert forget10[0].extra["author_id"] == 180 and full[19].extra["author_id"] == 0
    assert [s.id for s in load_tofu("forget01")] == ids[3960:]


def test_derived_splits_slice_full(full):
    forget30, retain70 = load_tofu("forget30"), load_tofu("retain70")
    assert forget30 == full[2800:] and retain70 == full[:2800]
    assert {s.id for s in forget30}.isdisjoint(s.id for s in retain70)


def test_perturbed_splits(full):
    pert = load_tofu("forget10_perturbed")
    assert [s.id for s in pert] == [s.id for s in full[3600:]]
    for s in pert:
        assert isinstance(s.extra["paraphrased_answer"], str)
        assert isinstance(s.extra["paraphrased_question"], str)
        assert len(s.extra["perturbed_answer"]) == 5 and all(isinstance(p, str) for p in s.extra["perturbed_answer"])
    retain_pert = load_tofu("retain_perturbed")
    assert [(s.id, s.prompt, s.answer) for s in retain_pert] == [(s.id, s.prompt, s.answer) for s in full[:400]]
    real_pert = load_tofu("real_authors_perturbed")
    assert real_pert[0].id == "tofu_real_authors:0" and len(real_pert[0].extra["perturbed_answer"]) == 3


def test_holdout_ids_and_authors(tofu_dir):
    holdout = load_tofu("holdout10")
    assert holdout[0].id == "tofu_holdout:0" and holdout[-1].id == "tofu_holdout:399"
    assert holdout[0].extra["author_id"] == 200 and holdout[-1].extra["author_id"] == 219
    assert load_tofu("holdout01") == holdout[:40]


@pytest.mark.parametrize("split, prefix, count, first", [
    ("real_authors", "tofu_real_authors", 100, "William Shakespeare"),
    ("world_facts", "tofu_world_facts", 117, "Paris"),
])
def test_mcq_splits(tofu_dir, split, prefix, count, first):
    samples = load_tofu(split)
    assert [s.id for s in samples] == [f"{prefix}:{i}" for i in range(count)]
    for s in samples:
        assert s.kind == "mcq" and len(s.extra["choices"]) == 4
        assert s.extra["choices"][s.extra["answer_index"]] == s.answer
    assert samples[0].answer == first


def test_idk(tofu_dir):
    idk = load_idk()
    assert len(idk) == 100 and all(isinstance(x, str) and x.strip() for x in idk)
    assert idk[0] == "I'm not certain about that."


def test_unknown_split_did_you_mean(tofu_dir):
    with pytest.raises(MrdkitError, match=r"unknown TOFU split 'forget11'; did you mean 'forget10'"):
        load_tofu("forget11")


def test_load_samples_tofu_sources(tofu_dir, full):
    assert load_samples("tofu:forget01") == full[3960:]
    assert load_samples("tofu", split="forget01") == full[3960:]
    assert load_samples(tofu_dir, split="forget01", limit=5) == full[3960:3965]
    with pytest.raises(MrdkitError, match="needs a split"):
        load_samples("tofu")
    with pytest.raises(MrdkitError, match="conflicting TOFU splits"):
        load_samples("tofu:forget01", split="forget05")


def test_tofu_folder_errors(tmp_path, tofu_dir):
    shutil.copy(tofu_dir / "forget01.json", tmp_path / "forget01.json")
    assert load_tofu("forget01", source=tmp_path)[0].id == "tofu:3960"
    with pytest.raises(MrdkitError, match=r"forget10\.json: no such file \(TOFU folder"):
        load_tofu("forget10", source=tmp_path)
    (tmp_path / "forget05.json").write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(MrdkitError, match="should have 200 records, found 1"):
        load_tofu("forget05", source=tmp_path)
    with pytest.raises(MrdkitError, match="neither a folder nor a Hugging Face hub id"):
        load_tofu("full", source="no/such/folder/here")
    rows = [json.dumps({"question": "q", "answer": "a", "perturbed_answer": "oops"}) for _ in range(40)]
    (tmp_path / "forget01_perturbed.json").write_text("\n".join(rows))
    with pytest.raises(MrdkitError, match=r"field 'perturbed_answer' of tofu:3960 must be a list of strings"):
        load_tofu("forget01_perturbed", source=tmp_path)


def test_tofu_from_hub_offline_and_faked(tofu_dir, monkeypatch):
    with pytest.raises(MrdkitError, match=r"cannot load 'locuslab/TOFU' \(config 'forget01'.*offline\?"):
        load_samples("locuslab/TOFU", split="forget01")
    import datasets

    from mrdkit.data import read_records

    def fake_load_dataset(path, name=None, split=None):
        assert (path, split) == ("locuslab/TOFU", "train")
        return read_records(tofu_dir / f"{name}.json", fmt="json")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_tofu("forget01", source="locuslab/TOFU") == load_tofu("forget01")
    assert [s.id for s in load_tofu("forget20", source="locuslab/TOFU")][0] == "tofu:3200"


def test_every_registered_split_loads(tofu_dir):
    for split in TOFU_SPLITS:
        assert load_tofu(split), split


# --- MUSE-News -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def muse(tofu_dir):
    path = tofu_dir.parent / "muse-news"
    if not path.is_dir():
        pytest.skip("MUSE-News data not found")
    return path


def test_muse_knowmem_qa(muse):
    samples = load_samples(muse / "knowmem" / "forget_qa.json")
    assert len(samples) == 100 and all(s.kind == "qa" and s.prompt and s.answer for s in samples)
    assert samples[0].id == "forget_qa:0"


def test_muse_raw_forget_text_with_empty_and_duplicates(muse):
    samples = load_samples(muse / "raw" / "forget.json")
    assert len(samples) == 889 and all(s.kind == "text" and s.prompt == "" for s in samples)
    assert len({s.id for s in samples}) == 889
    assert sum(1 for s in samples if not s.answer) == 1
    assert len({s.answer for s in samples}) == 858


def test_muse_verbmem_and_privleak(muse):
    verb = load_samples(muse / "verbmem" / "forget.json")
    assert len(verb) == 100 and verb[0].kind == "qa"  # prompt + gt
    priv = load_samples(muse / "privleak" / "holdout.json")
    assert len(priv) == 100 and priv[0].kind == "text" and priv[0].id == "holdout:0"


def test_embedded_subset_is_used_without_shared_data(monkeypatch, tmp_path):
    """A machine without shared/data still has the splits the embedded testbed needs."""
    from mrdkit import paths
    from mrdkit.data import load_idk, load_tofu
    from mrdkit.errors import MrdkitError

    monkeypatch.setattr(paths, "tofu_dir", lambda: tmp_path / "missing")
    forget = load_tofu("forget01")
    assert len(forget) == 40 and forget[0].id == "tofu:3960"
    assert len(load_tofu("retain_perturbed")) == 400 and len(load_idk()) == 100
    with pytest.raises(MrdkitError, match="full.json is neither"):
        load_tofu("full")
