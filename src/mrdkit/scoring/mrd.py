"""``score_mrd``: Memory Removal Difficulty for a list of samples, its result, and its run directory.

MRD (Feng et al. 2025, "A Neuro-inspired Interpretation of Unlearning in LLMs through Sample-level Unlearning
Difficulty", arXiv:2504.06658) is the expected relative change of a sample's token log-probs under small
Gaussian weight noise:

    MRD(x) = | (1/K) sum_k sum_t (l_t(theta) - l_t(theta + delta_k)) / l_t(theta) |,   delta_k ~ N(0, sigma^2 I).

High MRD = fragile memory = easy to unlearn. :func:`score_mrd` turns samples into batches, runs the
common-random-number engine (:func:`mrdkit.scoring.engine.score_batches`, or its multi-process form
:func:`mrdkit.scoring.distributed.score_batches_distributed` under torchrun), adds cheap difficulty proxies, and
writes ``mrd.jsonl``, ``mrd.parquet``, ``draws.safetensors``, ``summary.json`` and ``mrd_hist.png``
(:class:`MRDResult`; :func:`load_mrd_result` reads them back bit-exactly). Draws are checkpointed atomically every
few draws; ``resume=True`` finishes with exactly the numbers of an uninterrupted run. With several processes,
rank 0 owns the run directory, the proxies and the floor check; every rank scores its shard.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from mrdkit.data.templates import resolve_template
from mrdkit.dist import gather_objects, init_distributed, on_rank0, wants_distributed
from mrdkit.errors import MrdkitError
from mrdkit.logprob import model_device
from mrdkit.models import check_mrd_dtype, fit_max_length, model_dtype, model_fingerprint, resolve_model
from mrdkit.runs import RunDir, atomic_path, check_output_dir, digest, dumps, run_state
from mrdkit.scoring.config import MRDConfig
from mrdkit.scoring.engine import EngineResult, floor_check, score_batches

CHECKPOINT = "state/accumulator.safetensors"


# What the signed mean of each estimator's per-draw values is (the column is named for it): the paper estimator's
# draws are relative changes r_k, so their mean is a mean relative change; the antithetic estimator's are the
# curvature parts c_k.
MEAN_COLUMNS = {"paper": "mean_relative_change", "antithetic": "curvature"}
# columns of mrd.jsonl written from the result's own tensors; every other column is a proxy
_CORE_COLUMNS = ("id", "mrd", "stderr", "resolved", *MEAN_COLUMNS.values(), "base_logprob", "n_tokens",
                 "first_order_spread", "estimator", "sigma", "draws", "dtype", "model")
# settings repeated on every row, so that mrd.jsonl / mrd.parquet read alone say how their numbers were made
_ROW_SETTINGS = ("estimator", "sigma", "draws", "dtype", "model")


def mean_column(estimator: str) -> str:
    """The ``mrd.jsonl`` column holding the signed mean of ``estimator``'s draws."""
    return MEAN_COLUMNS.get(estimator, "signed_mean")


@dataclass
class MRDResult:
    """Per-sample MRD with its uncertainty, parts, proxies and raw draws (all in the order of ``ids``)."""

    ids: list[str]
    mrd: torch.Tensor
    mean: torch.Tensor
    stderr: torch.Tensor
    unresolved: torch.Tensor
    base_logprob: torch.Tensor
    n_tokens: torch.Tensor
    draws: torch.Tensor
    first_order_spread: Optional[torch.Tensor] = None
    proxies: dict[str, dict[str, float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    out_dir: Optional[Path] = None

    def scores(self) -> dict[str, float]:
        """``{id: mrd}`` (input to MRD-guided samplers)."""
        return {sid: float(v) for sid, v in zip(self.ids, self.mrd)}

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per sample (the ``mrd.jsonl`` schema): ``mrd`` = |signed mean| (clipped), its
        ``stderr`` and ``resolved`` flag, the signed mean under its own name (:data:`MEAN_COLUMNS`:
        ``mean_relative_change`` for the paper estimator, ``curvature`` for the antithetic one), the base log-prob,
        the token count, the first-order spread (antithetic), the settings that made the number (estimator,
        sigma, draws K, dtype, model) and the proxies."""
        mean_key = mean_column(self.config.get("estimator", ""))
        settings = {k: self.config[k] for k in _ROW_SETTINGS if k in self.config}
        out = []
        for i, sid in enumerate(self.ids):
            row = {"id": sid, "mrd": float(self.mrd[i]), "stderr": float(self.stderr[i]),
                   "resolved": not bool(self.unresolved[i]), mean_key: float(self.mean[i]),
                   "base_logprob": float(self.base_logprob[i]), "n_tokens": int(self.n_tokens[i])}
            if self.first_order_spread is not None:
                row["first_order_spread"] = float(self.first_order_spread[i])
            row.update(settings)
            row.update({k: v for k, v in self.proxies.get(sid, {}).items() if k not in row})
            out.append(row)
        return out

    def to_pandas(self):
        """The rows as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    def summary(self) -> dict[str, Any]:
        """Aggregate numbers for ``summary.json``."""
        mrd = self.mrd.double()
        return {"n_samples": len(self.ids), **{k: self.config.get(k) for k in _ROW_SETTINGS},
                "floor_ok": self.diagnostics.get("ok"), "floor_reason": self.diagnostics.get("reason"),
                "mrd_mean": float(mrd.mean()), "mrd_median": float(mrd.median()),
                "mrd_min": float(mrd.min()), "mrd_max": float(mrd.max()),
                "unresolved": int(self.unresolved.sum()), "unresolved_fraction": float(self.unresolved.double().mean()),
                "config": self.config, "timing": self.timing, "diagnostics": self.diagnostics}


def write_outputs(run: Any, out: MRDResult, first_order_values: Optional[torch.Tensor] = None) -> None:
    """Write the result files into ``run`` (a :class:`~mrdkit.runs.RunDir`) atomically and mark it finished."""
    from safetensors.torch import save_file

    from mrdkit import plots

    rows = out.rows()
    run.write_jsonl("mrd.jsonl", rows)
    with atomic_path(run.file("mrd.parquet")) as tmp:
        out.to_pandas().to_parquet(tmp, index=False)
    tensors = {"values": out.draws.contiguous()}
    if first_order_values is not None:
        tensors["first_order_values"] = first_order_values.contiguous()
    with atomic_path(run.file("draws.safetensors")) as tmp:
        save_file(tensors, str(tmp), metadata={"ids": json.dumps(out.ids)})
    run.write_json("summary.json", out.summary())
    plots.histogram([r["mrd"] for r in rows], run.file("mrd_hist.png"), title=f"MRD ({out.config['estimator']})",
                    xlabel="MRD (high = easy to unlearn)", log=True)
    run.mark_finished(out.summary())


def load_mrd_result(out_dir: str | Path) -> MRDResult:
    """The :class:`MRDResult` of a FINISHED scoring run directory (``DONE.json`` present).

    Raises a one-line :class:`MrdkitError` naming the directory when the run is unfinished or a file is missing
    or inconsistent (ids of ``mrd.jsonl`` and ``draws.safetensors`` differ).
    """
    from safetensors import safe_open

    from mrdkit.runs import read_json, read_jsonl

    path = Path(out_dir)
    for name in ("DONE.json", "mrd.jsonl", "draws.safetensors", "summary.json"):
        if not (path / name).is_file():
            raise MrdkitError(f"{path}: not a finished MRD run ({name} is missing)")
    rows = read_jsonl(path / "mrd.jsonl")
    with safe_open(str(path / "draws.safetensors"), framework="pt") as fh:
        draw_ids, draws = json.loads(fh.metadata()["ids"]), fh.get_tensor("values")
    ids = [r["id"] for r in rows]
    if ids != draw_ids:
        raise MrdkitError(f"{path}: mrd.jsonl and draws.safetensors list different samples")
    summary = read_json(path / "summary.json")

    def column(key: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor([r[key] for r in rows], dtype=dtype)

    spread = column("first_order_spread") if rows and "first_order_spread" in rows[0] else None
    proxies = {r["id"]: {k: v for k, v in r.items() if k not in _CORE_COLUMNS} for r in rows}
    mean_key = next((k for k in (*MEAN_COLUMNS.values(), "signed_mean") if rows and k in rows[0]), "curvature")
    return MRDResult(ids=ids, mrd=column("mrd"), mean=column(mean_key), stderr=column("stderr"),
                     unresolved=~column("resolved", torch.bool), base_logprob=column("base_logprob"),
                     n_tokens=column("n_tokens", torch.long), draws=draws, first_order_spread=spread,
                     proxies={k: v for k, v in proxies.items() if v}, config=summary.get("config", {}),
                     timing=summary.get("timing", {}), diagnostics=summary.get("diagnostics", {}), out_dir=path)


# ------------------------------------------------------------------------------------------------ scoring


def make_batches(samples: Sequence[Any], tokenizer: Any, cfg: MRDConfig, model: Any = None) -> list[dict[str, Any]]:
    """Encode samples with the run's template/token set and cut them into batches (input order kept).

    With ``model``, sequences are also cut to its context (:func:`mrdkit.models.fit_max_length`; a warning counts
    the truncated samples) rather than indexing past its position table."""
    from mrdkit.data import encode_samples, iter_batches, pad_id

    max_length = cfg.max_length if model is None else fit_max_length(model, cfg.max_length)
    encoded = encode_samples(samples, tokenizer, template=cfg.template, token_set=cfg.token_set,
                             max_length=max_length, encoding=cfg.encoding)
    return list(iter_batches(encoded, cfg.batch_size, pad_token_id=pad_id(tokenizer)))


def run_config(cfg: MRDConfig, samples: Sequence[Any], model: Optional[dict[str, Any]] = None,
               tokenizer: Any = None, **extra: Any) -> dict[str, Any]:
    """The ``config.json`` of a scoring run: settings, sample count, a digest of the sample ids, the model's
    :func:`~mrdkit.models.model_fingerprint` (so a run is never resumed or reused with other weights) and, with
    ``tokenizer``, the template ``auto`` picked for it (``template_used``)."""
    used = {"template_used": resolve_template(cfg.template, tokenizer)} if tokenizer is not None else {}
    return {"kind": "mrd", "mrd": asdict(cfg), "samples": len(samples), "ids": digest(s.id for s in samples),
            "model": model, **used, **extra}


def model_label(module: Any, spec: Optional[str]) -> str:
    """What names the model in the outputs: its spec (path, hub id, ``tiny...``, testbed name), else the path it was
    loaded from, else its class."""
    return spec or str(getattr(module, "name_or_path", "") or "") or type(module).__name__


def check_floor(diagnostics: dict[str, Any], cfg: MRDConfig) -> None:
    """Refuse a run whose floor check failed (:func:`~mrdkit.scoring.engine.floor_check`), unless
    ``cfg.allow_floor``: its MRDs would rank rounding noise, not memory (every sample is then unresolved)."""
    if diagnostics and not diagnostics.get("ok", True) and not cfg.allow_floor:
        raise MrdkitError(f"{diagnostics['reason']}; score in float64 (--dtype float64, or --dtype auto), change "
                          f"--sigma, or pass --allow-floor to keep a run whose every sample is unresolved")


def float32_is_enough(loaded: Any, samples: Sequence[Any], cfg: MRDConfig) -> tuple[bool, str]:
    """``--dtype auto``: does a float32 model pass the floor check (:func:`~mrdkit.scoring.engine.floor_check`) for
    these samples and settings? Returns ``(ok, reason)``; the caller loads the model in float64 when not ok
    (loading, not casting: a model stored in float64 would lose its low bits in a float32 round trip)."""
    if model_dtype(loaded.model) != torch.float32 or not cfg.diagnostics:
        return True, "as loaded"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float32 failing is the expected news here, not a warning
        check = floor_check(loaded.model, make_batches(samples, loaded.tokenizer, cfg, loaded.model), cfg)
    if check["ok"]:
        return True, "auto: float32 passes the floor check"
    return False, "auto: float32 is not enough: " + check["reason"].removeprefix("floor check failed: ")


def score_mrd(model: Any, samples: Sequence[Any], *, tokenizer: Any = None, config: Optional[MRDConfig] = None,
              out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
              progress: Optional[Callable[[int, int], None]] = None, distributed: Optional[bool] = None,
              **overrides: Any) -> MRDResult:
    """Score MRD for ``samples`` (arXiv:2504.06658) and, with ``out_dir``, write a resumable run directory.

    Args:
        model: a :class:`~mrdkit.models.LoadedModel`, a spec string, or a causal LM module (then pass
            ``tokenizer``); float32 or float64 weights (bf16/fp16 are refused: a 1e-5 perturbation is below their
            resolution), or half weights with ``compute_dtype="float32"`` and ``perturb_mode="lowmem"`` (scored in
            fp32 one module at a time, bitwise as the same weights converted to fp32; no gradient-norm proxy).
        samples: :class:`~mrdkit.data.Sample` list with unique ids.
        config: :class:`MRDConfig`; keyword ``overrides`` (e.g. ``draws=16, sigma=1e-4``) replace its fields.
        out_dir: run directory (mrd.jsonl, mrd.parquet, draws.safetensors, summary.json, mrd_hist.png).
        resume: continue an interrupted run in ``out_dir`` (refused if its config differs); a finished run with
            the same settings, samples and weights is loaded instead of recomputed.
        progress: ``progress(draws_done, draws_total)``.
        distributed: split the draws or samples (``config.shard``) over the ranks of ``torch.distributed``
            (:mod:`mrdkit.scoring.distributed`); None = automatic under torchrun / an initialised group.

    Returns:
        :class:`MRDResult` (on every rank).
    """
    cfg = (config or MRDConfig()).with_overrides(**overrides)
    module, tokenizer, spec = resolve_model(model, tokenizer, for_mrd=cfg.compute_dtype is None)
    if cfg.compute_dtype is None:  # half weights are refused unless every module runs in compute_dtype
        check_mrd_dtype(module)
    if not samples:
        raise MrdkitError("no samples to score")
    fingerprint = model_fingerprint(module) if out_dir is not None else None
    if resume and out_dir is not None and \
            run_state(out_dir, run_config(cfg, samples, fingerprint, tokenizer)) == "finished":
        return load_mrd_result(out_dir)  # a finished run with the same settings: nothing left to compute
    if out_dir is not None:
        check_output_dir(out_dir)  # before the floor check's passes: a model folder is never an output
    multi = wants_distributed(distributed)
    rank, world = init_distributed(model_device(module)) if multi else (0, 1)
    extra = {"world_size": world} if multi else {}
    batches = make_batches(samples, tokenizer, cfg, module)
    diagnostics = on_rank0(lambda: _floor_diagnostics(module, batches, cfg), rank, world)
    check_floor(diagnostics, cfg)  # every rank has the same diagnostics, so every rank refuses alike
    run = on_rank0(lambda: _open_run(out_dir, cfg, samples, resume, overwrite, fingerprint, tokenizer, **extra),
                   rank, world, share=False)
    timing: dict[str, float] = {}
    proxies = on_rank0(lambda: _proxies(module, batches, samples, cfg, run, timing), rank, world)
    tic = time.perf_counter()
    if multi:
        from mrdkit.scoring.distributed import score_batches_distributed

        state_dir = Path(out_dir) / "state" if out_dir is not None else None
        result = score_batches_distributed(module, batches, cfg, state_dir=state_dir, resume=resume,
                                           progress=progress)
    else:
        start, state = _load_checkpoint(run) if (run is not None and resume) else (0, None)
        result = score_batches(module, batches, cfg, progress=progress, checkpoint=_checkpointer(run, cfg),
                               start_draw=start, accumulator=state)
    timing.update(draws_s=time.perf_counter() - tic, forward_passes=float(result.forward_passes))
    labels = {"dtype": str(model_dtype(module)).removeprefix("torch."), "model": model_label(module, spec),
              "template_used": resolve_template(cfg.template, tokenizer)}
    out = _to_result(result, proxies, cfg, timing, diagnostics, out_dir, labels)
    if run is not None:
        write_outputs(run, out, result.estimate.first_order_values)
    if multi:
        gather_objects(None, world)  # barrier: every rank returns after rank 0 has written the outputs
    return out


def _open_run(out_dir, cfg: MRDConfig, samples: Sequence[Any], resume: bool, overwrite: bool,
              model: Optional[dict[str, Any]] = None, tokenizer: Any = None, **extra: Any) -> Optional[RunDir]:
    if out_dir is None:
        return None
    run = RunDir(out_dir, run_config(cfg, samples, model, tokenizer, **extra), resume=resume, overwrite=overwrite)
    if not resume:  # a fresh run must not pick up an earlier attempt's cached proxies or saved draws
        for stale in [run.file("proxies.json"), *run.file("state").glob("*.safetensors")]:
            stale.unlink(missing_ok=True)
    return run


def _proxies(module, batches, samples, cfg: MRDConfig, run, timing: dict[str, float]) -> dict[str, dict[str, float]]:
    """Cheap difficulty baselines on the same batches (cached in the run directory for resume)."""
    if not cfg.proxies:
        return {}
    cached = run.file("proxies.json") if run is not None else None
    if cached is not None and cached.exists():
        return json.loads(cached.read_text())
    from mrdkit.scoring.proxies import compute_proxies

    tic = time.perf_counter()
    texts = {s.id: s.text for s in samples}
    if cfg.compute_dtype is None:
        proxies = compute_proxies(module, batches, texts=texts, grad_norm=cfg.grad_norm)
    else:  # the same precision as the draws; no gradient norm (autograd cannot run through swapped weights)
        from mrdkit.scoring.perturb import Upcaster

        with Upcaster(module, cfg.torch_compute_dtype()):
            proxies = compute_proxies(module, batches, texts=texts, grad_norm=False)
    timing["proxies_s"] = time.perf_counter() - tic
    if run is not None:
        run.write_json("proxies.json", proxies)
    return proxies


def _floor_diagnostics(module, batches, cfg: MRDConfig) -> dict[str, Any]:
    """Is sigma visible above the floating-point floor? (warns if not; paper-notes section 1 pitfalls)."""
    return floor_check(module, batches, cfg) if cfg.diagnostics else {}


def _checkpointer(run: Optional[RunDir], cfg: MRDConfig):
    """Save the accumulator every ``checkpoint_every`` draws (one safetensors file, written atomically)."""
    if run is None:
        return None

    def save(draw: int, state: dict[str, Any]) -> None:
        if (draw + 1) % cfg.checkpoint_every == 0 or draw + 1 == cfg.draws:
            _save_state(run.file(CHECKPOINT), state)

    return save


def _save_state(path: Path, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    meta = {"estimator": state["estimator"], "n": str(state["n"]), "meta": dumps(state["meta"], indent=None)}
    with atomic_path(path) as tmp:
        save_file({"raw": state["raw"].contiguous()}, str(tmp), metadata=meta)


def _load_checkpoint(run: RunDir) -> tuple[int, Optional[dict[str, Any]]]:
    """(next draw, accumulator state) of an interrupted run, or (0, None) if it saved no draw yet."""
    path = run.file(CHECKPOINT)
    if not path.exists():
        return 0, None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta, raw = fh.metadata(), fh.get_tensor("raw")
    state = {"estimator": meta["estimator"], "n": int(meta["n"]), "meta": json.loads(meta["meta"]), "raw": raw}
    return int(raw.shape[2]), state


def _to_result(result: EngineResult, proxies, cfg: MRDConfig, timing, diagnostics, out_dir,
               labels: dict[str, Any]) -> MRDResult:
    """The run's :class:`MRDResult`; after a failed floor check (kept with ``allow_floor``) no sample is resolved:
    its number may be rounding noise however small its Monte Carlo error looks."""
    est = result.estimate
    unresolved = est.unresolved | (not diagnostics.get("ok", True))
    return MRDResult(ids=result.ids, mrd=est.mrd, mean=est.mean, stderr=est.stderr, unresolved=unresolved,
                     base_logprob=result.base_logprob, n_tokens=result.n_tokens, draws=est.values,
                     first_order_spread=est.first_order_spread, proxies=proxies,
                     config=asdict(cfg) | {"n_perturbed": result.n_perturbed} | labels, timing=timing,
                     diagnostics=diagnostics, out_dir=Path(out_dir) if out_dir is not None else None)
