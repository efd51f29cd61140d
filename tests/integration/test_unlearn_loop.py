"""The unlearning loop on a tiny GPT-2: every method unlearns and trains every trainable parameter, LoRA trains
only adapters, resume after a crash is bitwise equal to an uninterrupted run, NaN stops the run cleanly, the stop
rule and callbacks fire, and batches never touch the global RNG."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch

from mrdkit.data import Sample, collate, encode_samples, pad_id
from mrdkit.errors import MrdkitError, NonFiniteLossError
from mrdkit.logprob import token_logprobs
from mrdkit.models import build_tiny_model
from mrdkit.runs import read_jsonl
from mrdkit.unlearning import losses as L
from mrdkit.unlearning.config import LoraSettings, UnlearnConfig
from mrdkit.unlearning.loop import unlearn
from mrdkit.unlearning.methods import GradAscent, build_method

ALL = ["ga", "graddiff", "kl", "npo", "simnpo", "idk", "idkdpo", "rmu"]
# one block, so RMU's layer 0 output (after the final norm) reaches every parameter; WMDP's alpha = 100 is tuned
# for lr 5e-5 and makes Adam at lr 1e-2 oscillate. SimNPO's beta 4.5 saturates its sigmoid on a random model
# (mean log-prob ~ -5.7: gradient ~ e^-25), leaving only the retain descent, so a smaller beta and gamma 1 here
HPARAMS = {"rmu": {"layer": 0, "alpha": 1.0}, "simnpo": {"beta": 0.5, "gamma": 1.0}}
IDK = ["I have no idea.", "That is not something I know.", "I cannot answer that."]
# Forget answers are digits and symbols, retain / IDK answers letters: with a ~300-token (mostly one-character)
# vocabulary, descent on retain / IDK answers then moves probability away from the forget answers' characters.
FORGET = [Sample(f"f:{i}", f"Where was author {i} born?", f"{i}7-9{i}3/5{i}8 #{i}{i}4") for i in range(8)]
RETAIN = [Sample(f"r:{i}", f"What does writer {i} collect?", "Maps, stamps and old clocks.") for i in range(6)]
FAST = UnlearnConfig(lr=1e-2, max_steps=4, batch_size=4, schedule="constant", warmup_ratio=0.0, monitor_retain=4,
                     device="cpu")  # bitwise checks: the same device on every machine


@pytest.fixture(scope="module")
def tiny():
    texts = [s.prompt + s.answer for s in FORGET + RETAIN] + IDK
    return build_tiny_model(texts, vocab_size=300, n_layer=1, d_model=32, n_head=2, max_position=64)


def fresh(tiny):
    return copy.deepcopy(tiny.model)


def forget_progress(name, model, tokenizer):
    """What each method must lower: the forget token-mean log-prob, or RMU's distance to its steering target."""
    batch = collate(encode_samples(FORGET, tokenizer, template="plain"), pad_id(tokenizer))
    model.eval()
    if name != "rmu":
        lp = token_logprobs(model, batch)
        return float(L.token_mean(lp.sum(), lp.count()))
    method = build_method("rmu", **HPARAMS["rmu"])
    with torch.no_grad():
        h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        h = h.hidden_states[method.layer + 1]
    return float(L.rmu_loss(h, method.control_vector(h.shape[-1]), method.steering_coef, batch["labels"] != -100))


def snapshot(model):
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def run(tiny, model=None, **kw):
    cfg = kw.pop("config", FAST)
    kw.setdefault("idk", IDK)
    return unlearn(model if model is not None else fresh(tiny), tiny.tokenizer, FORGET, kw.pop("retain", RETAIN),
                   config=dataclasses.replace(cfg, template="plain"), **kw)


@pytest.mark.parametrize("name", ALL)
def test_every_method_unlearns_and_changes_every_parameter(name, tiny):
    model = fresh(tiny)
    before, start = forget_progress(name, model, tiny.tokenizer), snapshot(model)
    res = run(tiny, model, method=name, config=dataclasses.replace(FAST, method_kwargs=HPARAMS.get(name, {})))
    assert forget_progress(name, res.model, tiny.tokenizer) < before - 1e-3
    unchanged = [k for k, p in res.model.named_parameters() if torch.equal(p.detach(), start[k])]
    assert unchanged == []
    assert [row["step"] for row in res.history] == [0, 1, 2, 3, 4]
    assert all(math.isfinite(row["loss"]) and row["lr"] == 1e-2 for row in res.history[1:])


def test_lora_trains_only_adapters_and_saves_the_adapter(tiny, tmp_path):
    model = fresh(tiny)
    base = snapshot(model)
    before = forget_progress("ga", model, tiny.tokenizer)
    cfg = dataclasses.replace(FAST, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    res = run(tiny, model, method="ga", config=cfg, out_dir=tmp_path / "run")
    named = dict(res.model.named_parameters())
    adapters = {k: p for k, p in named.items() if "lora_" in k}
    assert adapters and all(p.requires_grad for p in adapters.values())
    assert {k for k, p in named.items() if p.requires_grad} == set(adapters)
    for name, value in base.items():  # peft names the wrapped base weight ...base_layer.weight
        key = next(k for k in named if k.endswith(name.replace("c_attn.", "c_attn.base_layer.")) and "lora_" not in k)
        assert torch.equal(named[key].detach(), value), name
    assert forget_progress("ga", res.model, tiny.tokenizer) < before - 1e-3
    assert (tmp_path / "run/model/adapter_model.safetensors").is_file()
    assert res.summary["lora_targets"] == ["c_attn"] and res.summary["trainable_params"] < 2000


def test_lora_merge_on_save_writes_a_full_model(tiny, tmp_path):
    cfg = dataclasses.replace(FAST, max_steps=1, lora=LoraSettings(r=2, merge_on_save=True))
    res = run(tiny, method="ga", config=cfg, out_dir=tmp_path / "run")
    assert (tmp_path / "run/model/model.safetensors").is_file() and (tmp_path / "run/model/config.json").is_file()
    assert not any("lora_" in k for k, _ in res.model.named_parameters())


def test_resume_after_a_crash_is_bitwise_equal_to_an_uninterrupted_run(tiny, tmp_path):
    # dropout on, warmup + linear decay, 2 micro-batches per step, retain pairing, a reference model, and MRD
    # re-scored at every epoch (2 steps each): the crash comes inside epoch 2, whose scores must be restored
    cfg = dataclasses.replace(FAST, max_steps=6, batch_size=2, grad_accum=2, schedule="linear", warmup_steps=2,
                              checkpoint_every=3, eval_every=1, method_kwargs={"alpha": 1.0},
                              sampler_kwargs={"inner": "cga"}, rescore_draws=2)
    scores = {s.id: 0.1 * i for i, s in enumerate(FORGET)}
    kw = dict(method="npo", sampler="refresh", scores=scores, config=cfg)
    straight = run(tiny, out_dir=tmp_path / "a", **kw)

    def crash(state):
        if state.step == 5:
            raise KeyboardInterrupt  # killed after the step-3 checkpoint, with rows 4 logged past it

    torch.manual_seed(1234)  # the global RNG must not matter
    with pytest.raises(KeyboardInterrupt):
        run(tiny, out_dir=tmp_path / "b", callbacks=[crash], **kw)
    assert [r["step"] for r in read_jsonl(tmp_path / "b/train_log.jsonl")] == [0, 1, 2, 3, 4]
    assert [p.name for p in (tmp_path / "b/checkpoints").iterdir()] == ["step-000003"]
    resumed = run(tiny, out_dir=tmp_path / "b", resume=True, **kw)
    a, b = dict(straight.model.named_parameters()), dict(resumed.model.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "eval"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "a/train_log.jsonl")) == strip(read_jsonl(tmp_path / "b/train_log.jsonl"))
    assert [r["lr"] for r in straight.history[1:]] == [0.0, 5e-3, 1e-2, 7.5e-3, 5e-3, 2.5e-3]
    assert all(len(r["forget_ids"]) == 4 for r in straight.history[1:])
    with pytest.raises(MrdkitError, match="--resume refused"):
        run(tiny, out_dir=tmp_path / "b", resume=True, **{**kw, "config": dataclasses.replace(cfg, lr=1e-3)})


class NaNAtStep3(GradAscent):
    calls = 0

    def compute(self, ctx):
        out = super().compute(ctx)
        NaNAtStep3.calls += 1
        if NaNAtStep3.calls == 3:
            out.total = out.total * float("nan")
            out.parts["forget_loss"] = out.parts["total"] = float("nan")
        return out


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    model = fresh(tiny)
    cfg = dataclasses.replace(FAST, max_steps=6, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3 \(forget_loss=nan, forget_logp=.*"
                                                 r"step-000002"):
        run(tiny, model, method=NaNAtStep3(), config=cfg, out_dir=tmp_path / "run")
    assert [p.name for p in (tmp_path / "run/checkpoints").iterdir()] == ["step-000002"]
    assert [r["step"] for r in read_jsonl(tmp_path / "run/train_log.jsonl")] == [0, 1, 2]
    assert json.loads((tmp_path / "run/summary.json").read_text())["status"] == "non_finite"
    assert not (tmp_path / "run/DONE.json").exists()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_stop_rule_records_the_step_and_callbacks_run_every_n_steps(tiny, tmp_path):
    start = run(tiny, method="ga", config=dataclasses.replace(FAST, max_steps=1)).history[0]["forget_prob"]
    seen = []
    cfg = dataclasses.replace(FAST, max_steps=20, stop_prob=start * 0.5, stop_check_every=1, eval_every=2)
    res = run(tiny, method="ga", config=cfg, out_dir=tmp_path / "run",
              callbacks=[lambda s: seen.append(s.step) or {"n_rows": len(s.history)}])
    assert res.stop_reason == "stop_prob" and 1 <= res.stop_step < 20
    assert res.history[-1]["forget_prob"] <= start * 0.5 < res.history[-2]["forget_prob"]
    assert seen == [s for s in range(2, res.stop_step + 1, 2)] + ([res.stop_step] if res.stop_step % 2 else [])
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["stop_step"] == res.stop_step and summary["status"] == "stopped"
    assert summary["forget_prob_end"] < summary["forget_prob_start"]
    assert (tmp_path / "run/DONE.json").is_file() and (tmp_path / "run/model/model.safetensors").is_file()
    assert {"config.json", "provenance.json", "train_log.jsonl"} <= {p.name for p in (tmp_path / "run").iterdir()}
    again = run(tiny, method="ga", config=cfg, out_dir=tmp_path / "run", resume=True)  # finished: nothing to do
    assert again.stop_step == res.stop_step and len(again.history) == len(res.history)
    with pytest.raises(MrdkitError, match="already holds a finished run"):
        run(tiny, method="ga", config=cfg, out_dir=tmp_path / "run")


def test_epochs_schedule_and_sampler_stream(tiny):
    cfg = dataclasses.replace(FAST, max_steps=None, epochs=2, batch_size=3, monitor_retain=0)
    res = run(tiny, method="ga", sampler="sequential", config=cfg)
    ids = [r["forget_ids"] for r in res.history[1:]]
    assert ids == [["f:0", "f:1", "f:2"], ["f:3", "f:4", "f:5"], ["f:6", "f:7"]] * 2
    assert [r["epoch"] for r in res.history[1:]] == [0.3333, 0.6667, 1.0, 1.3333, 1.6667, 2.0]
    assert "retain_prob" not in res.history[-1] and res.history[-1]["forget_prob"] is not None


def test_user_errors(tiny, tmp_path):
    with pytest.raises(MrdkitError, match="did you mean 'cga'"):
        run(tiny, sampler="cgaa")
    with pytest.raises(MrdkitError, match="needs retain data"):
        run(tiny, method="graddiff", retain=None)
    with pytest.raises(MrdkitError, match=r"1 forget sample\(s\) have no score .*'f:7'"):
        run(tiny, sampler="cga", scores={s.id: 1.0 for s in FORGET[:7]})
    bad = tmp_path / "mrd.jsonl"
    bad.write_text('{"id": "f:0"}\n')
    with pytest.raises(MrdkitError, match="line 1: no 'mrd' column .*pick one with --score-key"):
        run(tiny, sampler="cga", scores=bad)
    with pytest.raises(MrdkitError, match="lr must be > 0"):
        run(tiny, config=dataclasses.replace(FAST, lr=0.0))


def test_scores_computed_on_the_fly_when_the_sampler_needs_them(tiny):
    cfg = dataclasses.replace(FAST, max_steps=1, mrd_draws=2, sampler_kwargs={"start_frac": 0.5})
    res = run(tiny, method="ga", sampler="curriculum", config=cfg)
    assert res.summary["scores"] == "on-the-fly" and len(res.history[1]["forget_ids"]) == 4


DISTRIBUTED_SCRIPT = '''
import json, sys, torch
sys.path.insert(0, {here!r})
from test_unlearn_loop import FORGET, RETAIN, IDK
from mrdkit.models import build_tiny_model
from mrdkit.unlearning.config import UnlearnConfig
from mrdkit.unlearning.loop import unlearn
lm = build_tiny_model([s.prompt + s.answer for s in FORGET + RETAIN] + IDK, vocab_size=300, n_layer=1, d_model=32,
                      n_head=2, max_position=64)
cfg = UnlearnConfig(lr=1e-2, max_steps=3, batch_size=2, grad_accum=2, schedule="constant", warmup_ratio=0.0,
                    template="plain", device="cpu", checkpoint_every=2, method_kwargs={{"alpha": 1.0}})
res = unlearn(lm.model, lm.tokenizer, FORGET, RETAIN, method="npo", sampler="cga", config=cfg, out_dir=sys.argv[1],
              scores={{s.id: float(i) for i, s in enumerate(FORGET)}})
flat = torch.cat([p.detach().flatten().double() for p in res.model.parameters()])
print("RESULT", json.dumps({{"sum": float(flat.sum()), "ids": [len(r.get("forget_ids", [])) for r in res.history]}}))
'''


@pytest.mark.distributed
def test_two_processes_shard_the_sampler_and_stay_in_sync(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp.py"
    script.write_text(DISTRIBUTED_SCRIPT.format(here=str(Path(__file__).parent)))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MRDKIT_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line.split("RESULT", 1)[1]) for line in proc.stdout.splitlines() if "RESULT" in line]
    assert len(results) == 2 and results[0]["sum"] == results[1]["sum"]  # DDP kept both replicas identical
    assert results[0]["ids"] == [0, 8, 8, 8]  # 2 processes x 2 micro-batches x 2 samples, gathered
    assert [p.name for p in (tmp_path / "run/checkpoints").iterdir()] == ["step-000003"]
    assert (tmp_path / "run/DONE.json").is_file()
