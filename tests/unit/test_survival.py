"""Joint-survival ground truth and the online forecast (mrdkit.evaluation.survival)."""

from __future__ import annotations

import math

import pytest
import torch

from mrdkit.data import Sample
from mrdkit.errors import MrdkitError
from mrdkit.evaluation.survival import forecast_steps, joint_survival, survival_rows
from mrdkit.models import build_tiny_model

SAMPLES = [Sample(f"s{i}", f"Who wrote book {i}?", f"Book {i} was written by Jane Doe in Paris.") for i in range(4)]


def test_survival_rows_first_crossing_and_censoring():
    tau = 0.1  # log tau = -2.303
    rows = survival_rows(["a", "b", "c"], [[-1.0, -2.0, -2.5, -3.0], [-3.0, -4.0, -5.0, -6.0],
                                          [-1.0, -1.1, -1.2, -1.3]], tau)
    assert [(r["survival_step"], r["censored"]) for r in rows] == [(2, False), (0, False), (3, True)]
    assert rows[0]["initial_logprob"] == -1.0 and rows[2]["final_logprob"] == -1.3


def test_forecast_extrapolates_a_line_through_the_first_steps():
    log_tau = math.log(0.02)
    rows = [{"id": "lin", "trajectory": [0.0, -1.0, -2.0, -3.0, -9.0]},   # slope -1: reaches log tau at 3.912
            {"id": "hit", "trajectory": [-1.0, -5.0, -6.0]},                # below log tau at step 1
            {"id": "flat", "trajectory": [-1.0, -0.5, 0.0, 0.5]}]
    got = forecast_steps(rows, 2, 0.02)
    assert got["lin"] == pytest.approx(-log_tau) and got["hit"] == 1.0 and got["flat"] == math.inf
    with pytest.raises(MrdkitError, match="horizon"):
        forecast_steps(rows, 0, 0.02)


def test_joint_survival_times_every_sample_and_restores_the_model():
    lm = build_tiny_model([s.prompt + " " + s.answer for s in SAMPLES] * 4, vocab_size=300, n_layer=1,
                          d_model=32, n_head=2, seed=5)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    rows = joint_survival(lm.model, lm.tokenizer, SAMPLES, method="ga", lr=5e-2, max_steps=6, threshold=1e-4,
                          template="plain")
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    assert [r["id"] for r in rows] == [s.id for s in SAMPLES]
    for r in rows:
        traj, log_tau = r["trajectory"], math.log(1e-4)
        assert len(traj) == len(rows[0]["trajectory"]) <= 7 and traj[-1] < traj[0]  # GA lowers every sample
        crossed = [i for i, f in enumerate(traj) if f <= log_tau]
        assert r["censored"] == (not crossed) and r["survival_step"] == (crossed[0] if crossed else len(traj) - 1)
