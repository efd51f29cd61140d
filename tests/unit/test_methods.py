"""Unlearning methods on a tiny GPT-2: each lowers forget likelihood (RMU: moves activations to its target),
every parameter gets a gradient and changes, and the inputs gathered are exactly those the method asks for."""

import copy
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mrdkit.errors import MrdkitError
from mrdkit.logprob import token_logprobs
from mrdkit.unlearning import losses as L
from mrdkit.unlearning.methods import METHODS, build_method
from mrdkit.unlearning.step import gather_step_inputs

ALL = ["ga", "graddiff", "kl", "npo", "simnpo", "idk", "idkdpo", "rmu"]
# the tiny model has one block; WMDP's alpha = 100 is tuned for lr 5e-5 and makes Adam at lr 1e-2 oscillate
OVERRIDES = {"rmu": {"layer": 0, "alpha": 1.0}}


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def make_batch(ids, label_from=0, lengths=None):
    """Right-padded batch; labels from position ``label_from`` on (prompt masked before it)."""
    B, T = ids.shape
    lengths = lengths or [T] * B
    att = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100)
    for i, n in enumerate(lengths):
        att[i, :n] = 1
        labels[i, label_from:n] = ids[i, label_from:n]
    return {"input_ids": ids * att, "attention_mask": att, "labels": labels}


@pytest.fixture(scope="module")
def batches():
    # forget tokens in [0, 32), retain and IDK answers in [32, 64): learning retain/IDK moves mass away from forget
    g = torch.Generator().manual_seed(0)
    forget_ids = torch.randint(0, 32, (4, 8), generator=g)
    retain_ids = torch.randint(32, 64, (4, 8), generator=g)
    idk_ids = torch.cat([forget_ids[:, :4], torch.randint(32, 64, (4, 4), generator=g)], dim=1)
    return {
        "forget": make_batch(forget_ids, lengths=[8, 8, 8, 6]),  # last row padded
        "retain": make_batch(retain_ids),
        "idk": make_batch(idk_ids, label_from=4),  # IDK answer only
    }


def run_step(method, model, ref, batches):
    ctx = gather_step_inputs(method, model, ref, batches["forget"], batches["retain"], batches["idk"])
    out = method.compute(ctx)
    out.total.backward()
    return ctx, out


def frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def forget_progress(method, model, batch):
    """The quantity each method must lower: forget mean token log-prob, or RMU's distance to its target."""
    if method.name != "rmu":
        lp = token_logprobs(model, batch)
        return float(L.token_mean(lp.sum(), lp.count()))
    with torch.no_grad():
        h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        h = h.hidden_states[method.layer + 1]
    u = method.control_vector(h.shape[-1])
    return float(L.rmu_loss(h, u, method.steering_coef, batch["labels"] != -100))


@pytest.mark.parametrize("name", ALL)
def test_few_steps_unlearn(name, batches):
    method = build_method(name, **OVERRIDES.get(name, {}))
    model = tiny_gpt2().train()
    ref = frozen_copy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = forget_progress(method, model, batches["forget"])
    for _ in range(5):
        opt.zero_grad()
        _, out = run_step(method, model, ref, batches)
        assert math.isfinite(out.parts["total"])
        opt.step()
    assert forget_progress(method, model, batches["forget"]) < before - 1e-3


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_gets_gradient_and_changes(name, batches):
    method = build_method(name, **OVERRIDES.get(name, {}))
    model = tiny_gpt2().train()
    ref = frozen_copy(model)
    start = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run_step(method, model, ref, batches)
    no_grad = [k for k, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0]
    assert no_grad == []
    opt.step()
    unchanged = [k for k, p in model.named_parameters() if float((p.detach() - start[k]).abs().sum()) == 0]
    assert unchanged == []
    assert all(p.grad is None for p in ref.parameters())


@pytest.mark.parametrize(
    "name, hp, filled",
    [
        ("ga", {}, {"forget"}),
        ("graddiff", {}, {"forget", "retain"}),
        ("graddiff", {"retain_loss": "kl"}, {"forget", "retain", "retain_logits", "ref_retain_logits"}),
        ("kl", {}, {"forget", "retain", "retain_logits", "ref_retain_logits"}),
        ("npo", {}, {"forget", "ref_forget"}),
        ("npo", {"alpha": 1.0}, {"forget", "ref_forget", "retain"}),
        ("simnpo", {}, {"forget", "retain"}),
        ("idk", {}, {"idk", "retain"}),
        ("idkdpo", {}, {"forget", "ref_forget", "idk", "ref_idk", "retain"}),
        ("rmu", {"layer": 0}, {"forget", "forget_hidden", "forget_hidden_mask", "retain_hidden",
                               "ref_retain_hidden", "retain_hidden_mask"}),
        ("rmu", {"layer": 0, "alpha": 0.0}, {"forget", "forget_hidden", "forget_hidden_mask"}),
    ],
)
def test_gather_fills_only_what_is_needed(name, hp, filled, batches):
    method = build_method(name, **hp)
    model = tiny_gpt2()
    ctx = gather_step_inputs(method, model, frozen_copy(model), batches["forget"], batches["retain"], batches["idk"])
    assert {k for k, v in vars(ctx).items() if v is not None} == filled
    assert method.needs_reference == any(k.startswith("ref_") for k in filled)


def test_flags_and_defaults_table():
    rows = {n: METHODS.get(n)() for n in ALL}
    assert {n for n, m in rows.items() if m.needs_reference} == {"kl", "npo", "idkdpo", "rmu"}
    assert {n for n, m in rows.items() if m.needs_retain} == {"graddiff", "kl", "simnpo", "idk", "idkdpo", "rmu"}
    assert {n for n, m in rows.items() if m.needs_idk} == {"idk", "idkdpo"}
    assert {n for n, m in rows.items() if m.needs_activations} == {"rmu"}
    assert (rows["npo"].beta, rows["npo"].alpha, rows["idkdpo"].beta) == (0.1, 0.0, 0.1)
    assert (rows["rmu"].layer, rows["rmu"].steering_coef, rows["rmu"].alpha) == (7, 20.0, 100.0)
    # (gamma, alpha) of every method: open-unlearning's configs (GradDiff / KL / IDK gamma = alpha = 1, SimNPO
    # gamma 0.125), retain-free GA and plain NPO (alpha 0), WMDP's RMU alpha 100
    assert {n: (m.gamma, m.alpha) for n, m in rows.items()} == {
        "ga": (1.0, 0.0), "graddiff": (1.0, 1.0), "kl": (1.0, 1.0), "npo": (1.0, 0.0), "simnpo": (0.125, 1.0),
        "idk": (1.0, 1.0), "idkdpo": (1.0, 1.0), "rmu": (1.0, 100.0)}
    assert (rows["simnpo"].beta, rows["simnpo"].delta) == (4.5, 0.0)


def test_start_values_match_hand_math_and_hf_loss(batches):
    model = tiny_gpt2().eval()
    ref = frozen_copy(model)
    step = lambda m: m.compute(gather_step_inputs(m, model, ref, batches["forget"], batches["retain"]))  # noqa: E731
    # GA is -(HF causal-LM loss): the TOFU / open-unlearning convention (mean over the batch's tokens)
    hf = model(**{k: batches["forget"][k] for k in ("input_ids", "attention_mask", "labels")}).loss
    assert math.isclose(step(build_method("ga")).parts["forget_loss"], -float(hf.detach()), rel_tol=1e-5)
    # model == reference: NPO = (2/beta) ln 2, the KL retain term = 0
    assert math.isclose(step(build_method("npo", beta=0.1)).parts["forget_loss"], 20 * math.log(2), rel_tol=1e-9)
    assert abs(step(build_method("kl")).parts["retain_loss"]) < 1e-12


@pytest.mark.parametrize("name, gamma, alpha", [("graddiff", 2.0, 3.0), ("npo", 0.5, 4.0)])
def test_total_weighs_forget_by_gamma_and_retain_by_alpha(batches, name, gamma, alpha):
    """L = gamma * L_forget + alpha * L_retain with both terms worked out independently: at model == reference,
    GA's forget term is -(HF loss on the forget batch) and NPO's is (2 / beta) ln 2; the NLL retain term is the HF
    loss on the retain batch. Dropping either weight (or swapping them) changes the total."""
    model = tiny_gpt2().eval()
    ref = frozen_copy(model)
    hf = {k: float(model(**{f: batches[k][f] for f in ("input_ids", "attention_mask", "labels")}).loss.detach())
          for k in ("forget", "retain")}
    method = build_method(name, gamma=gamma, alpha=alpha)
    out = method.compute(gather_step_inputs(method, model, ref, batches["forget"], batches["retain"]))
    forget = -hf["forget"] if name == "graddiff" else 20 * math.log(2)
    assert out.parts["forget_loss"] == pytest.approx(forget, rel=1e-5)
    assert out.parts["retain_loss"] == pytest.approx(hf["retain"], rel=1e-5)
    assert float(out.total.detach()) == pytest.approx(gamma * forget + alpha * hf["retain"], rel=1e-5)


def test_rmu_control_vector_is_seeded_unit_norm():
    a, b, c = (build_method("rmu", seed=s).control_vector(32) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert math.isclose(float(a.norm()), 1.0, rel_tol=1e-6) and bool((a >= 0).all())


def test_user_errors(batches):
    with pytest.raises(MrdkitError, match="did you mean 'npo'"):
        build_method("nop")
    with pytest.raises(MrdkitError, match="no hyper-parameter 'betta'"):
        build_method("npo", betta=0.1)
    with pytest.raises(MrdkitError, match="retain_loss"):
        build_method("graddiff", retain_loss="mse")
    with pytest.raises(MrdkitError, match="beta must be > 0"):
        build_method("simnpo", beta=0.0)
    with pytest.raises(MrdkitError, match="needs a reference model"):
        gather_step_inputs(build_method("npo"), tiny_gpt2(), None, batches["forget"])
    with pytest.raises(MrdkitError, match="needs a retain batch and an idk batch"):
        gather_step_inputs(build_method("idk"), tiny_gpt2(), None, batches["forget"])
    with pytest.raises(MrdkitError, match="layer 3 out of range"):
        model = tiny_gpt2()
        gather_step_inputs(build_method("rmu", layer=3), model, model, batches["forget"], batches["retain"])
