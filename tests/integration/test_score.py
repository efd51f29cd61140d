"""score_mrd end to end: outputs, resume equality, batch-size independence, sigma = 0, CLI errors."""

import json

import pytest
import torch

from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.models import build_tiny_model
from mrdkit.scoring.config import MRDConfig
from mrdkit.scoring.mrd import CHECKPOINT, score_mrd

SAMPLES = [Sample(f"s{i}", f"Question: who is author {i}?", f" Author {i} writes {'novels ' * (i % 3 + 1)}.")
           for i in range(6)]


@pytest.fixture(scope="module")
def loaded():
    texts = [s.text for s in SAMPLES]
    return build_tiny_model(texts, vocab_size=300, n_layer=1, d_model=32, n_head=2, dtype="float64", seed=1)


def fast(**kw):
    base = dict(draws=4, sigma=1e-3, batch_size=4, grad_norm=False, diagnostics=False, checkpoint_every=1)
    return MRDConfig(**{**base, **kw})


def test_outputs_and_rows(loaded, tmp_path):
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    result = score_mrd(loaded, SAMPLES, config=fast(), out_dir=tmp_path / "run")
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, before[k])
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"mrd.jsonl", "mrd.parquet", "draws.safetensors", "summary.json", "mrd_hist.png", "config.json",
            "provenance.json", "DONE.json"} <= names
    rows = [json.loads(line) for line in (tmp_path / "run" / "mrd.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [s.id for s in SAMPLES]
    assert {"mrd", "stderr", "resolved", "curvature", "first_order_spread", "base_logprob", "n_tokens",
            "loss", "min_k_20", "zlib"} <= set(rows[0])
    assert all(r["mrd"] > 0 for r in rows) and result.draws.shape == (6, 4)


class Killed(Exception):
    pass


def test_resume_matches_uninterrupted(loaded, tmp_path):
    full = score_mrd(loaded, SAMPLES, config=fast(draws=5), out_dir=tmp_path / "a")

    def die_after_three(done, total):
        if done == 3:
            raise Killed

    with pytest.raises(Killed):
        score_mrd(loaded, SAMPLES, config=fast(draws=5), out_dir=tmp_path / "b", progress=die_after_three)
    assert (tmp_path / "b" / CHECKPOINT).exists() and not (tmp_path / "b" / "mrd.jsonl").exists()
    resumed = score_mrd(loaded, SAMPLES, config=fast(draws=5), out_dir=tmp_path / "b", resume=True)
    assert torch.equal(resumed.draws, full.draws) and torch.equal(resumed.mrd, full.mrd)
    assert (tmp_path / "a" / "mrd.jsonl").read_text() == (tmp_path / "b" / "mrd.jsonl").read_text()


def test_resume_refuses_other_config(loaded, tmp_path):
    score_mrd(loaded, SAMPLES, config=fast(), out_dir=tmp_path / "r")
    with pytest.raises(MrdkitError, match="different config"):
        score_mrd(loaded, SAMPLES, config=fast(sigma=2e-3), out_dir=tmp_path / "r", resume=True)


def test_batch_size_independent_and_seeded(loaded):
    a = score_mrd(loaded, SAMPLES, config=fast(batch_size=1, proxies=False))
    b = score_mrd(loaded, SAMPLES, config=fast(batch_size=6, proxies=False))
    c = score_mrd(loaded, SAMPLES, config=fast(batch_size=6, proxies=False, seed=7))
    assert torch.equal(a.draws, b.draws)
    assert not torch.equal(a.draws, c.draws)


@pytest.mark.parametrize("bad, message", [({"sigma": 0.0}, "sigma must be"), ({"sigma": float("nan")}, "sigma must be"),
                                          ({"draws": 0}, "draws"), ({"estimator": "antithetc"}, "did you mean")])
def test_bad_settings(loaded, bad, message):
    with pytest.raises(MrdkitError, match=message):
        score_mrd(loaded, SAMPLES, config=fast(**bad))


def test_refuses_bf16(loaded):
    import copy

    model = copy.deepcopy(loaded.model).to(torch.bfloat16)
    with pytest.raises(MrdkitError, match="bfloat16|bf16"):
        score_mrd(model, SAMPLES, tokenizer=loaded.tokenizer, config=fast())


def test_load_mrd_result_round_trips_a_finished_run(loaded, tmp_path):
    from mrdkit.scoring import load_mrd_result

    for estimator, proxies in (("antithetic", True), ("paper", False)):
        out = tmp_path / estimator
        result = score_mrd(loaded, SAMPLES, config=fast(estimator=estimator, proxies=proxies), out_dir=out)
        back = load_mrd_result(out)
        assert back.ids == result.ids and back.rows() == result.rows() and back.scores() == result.scores()
        assert torch.equal(back.draws, result.draws) and torch.equal(back.mrd, result.mrd.double())
        assert back.config == json.loads(json.dumps(result.config)) and back.out_dir == out
        assert (back.first_order_spread is None) == (result.first_order_spread is None)


def test_load_mrd_result_refuses_unfinished_or_inconsistent_runs(loaded, tmp_path):
    from mrdkit.scoring import load_mrd_result

    with pytest.raises(MrdkitError, match="DONE.json is missing"):
        load_mrd_result(tmp_path / "nowhere")
    score_mrd(loaded, SAMPLES, config=fast(), out_dir=tmp_path / "run")
    rows = (tmp_path / "run" / "mrd.jsonl").read_text().splitlines()
    (tmp_path / "run" / "mrd.jsonl").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(MrdkitError, match="list different samples"):
        load_mrd_result(tmp_path / "run")


def test_resume_of_a_finished_run_loads_it_without_scoring(loaded, tmp_path, monkeypatch):
    import mrdkit.scoring.engine as engine

    first = score_mrd(loaded, SAMPLES, config=fast(), out_dir=tmp_path / "run")
    monkeypatch.setattr(engine, "score_batches", lambda *a, **k: pytest.fail("a finished run was recomputed"))
    again = score_mrd(loaded, SAMPLES, config=fast(), out_dir=tmp_path / "run", resume=True)
    assert again.rows() == first.rows()
    with pytest.raises(MrdkitError, match="different config"):  # other settings: still refused, never mixed
        score_mrd(loaded, SAMPLES, config=fast(draws=3), out_dir=tmp_path / "run", resume=True)


def test_columns_are_named_for_what_they_hold(loaded, tmp_path):
    """The paper estimator's signed mean is a mean relative change, not a curvature; both load back."""
    from mrdkit.scoring.mrd import load_mrd_result

    paper = score_mrd(loaded, SAMPLES, config=fast(estimator="paper"), out_dir=tmp_path / "paper")
    rows = [json.loads(line) for line in (tmp_path / "paper" / "mrd.jsonl").read_text().splitlines()]
    assert "mean_relative_change" in rows[0] and "curvature" not in rows[0]
    assert [r["mean_relative_change"] for r in rows] == paper.mean.tolist()
    assert torch.equal(load_mrd_result(tmp_path / "paper").mean, paper.mean)
