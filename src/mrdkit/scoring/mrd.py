"""``score_mrd``: Memory Removal Difficulty for a list of samples, with run-directory outputs and resume.

MRD (Feng et al. 2025, "A Neuro-inspired Interpretation of Unlearning in LLMs through Sample-level Unlearning
Difficulty", arXiv:2504.06658) is the expected relative change of a sample's token log-probs under small
Gaussian weight noise:

    MRD(x) = | (1/K) sum_k sum_t (l_t(theta) - l_t(theta + delta_k)) / l_t(theta) |,   delta_k ~ N(0, sigma^2 I).

High MRD = fragile memory = easy to unlearn. This module turns samples into batches, runs the common-random-number
engine (:func:`mrdkit.scoring.engine.score_batches`), adds cheap difficulty proxies, and writes ``mrd.jsonl``,
``mrd.parquet``, ``draws.safetensors``, ``summary.json`` and ``mrd_hist.png``. Draws are checkpointed atomically
every few draws; ``resume=True`` finishes with exactly the numbers of an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from mrdkit.errors import MrdkitError
from mrdkit.scoring.results import MRDResult, load_mrd_result, write_outputs

CHECKPOINT = "state/accumulator.safetensors"


@dataclass
class MRDConfig:
    """Settings of an MRD scoring run. Defaults follow paper-notes section 1.

    sigma 1e-5 and token_set "all" match the reference code; draws 100 is the paper's K (its code uses 5-10);
    ``antithetic`` is the low-variance estimator (paper-notes section 2), ``paper`` the reference estimator.
    """

    estimator: str = "antithetic"
    draws: int = 100
    sigma: float = 1e-5
    seed: int = 0
    scheme: str = "mrdkit"
    token_set: str = "all"
    template: str = "auto"
    max_length: int = 512
    batch_size: int = 16
    param_pattern: Optional[str] = None
    relative: bool = False
    clip: Optional[float] = None
    proxies: bool = True
    grad_norm: bool = True
    checkpoint_every: int = 5
    diagnostics: bool = True
    perturb_mode: str = "copy"  # copy | lowmem (one module's weights cloned at a time; same numbers)
    shard: str = "draws"  # multi-process split: draws | samples (mrdkit.scoring.distributed; same numbers)

    def validate(self) -> "MRDConfig":
        """Raise a one-line :class:`MrdkitError` for values that cannot work."""
        import math

        from mrdkit.scoring.estimators import ESTIMATORS

        ESTIMATORS.get(self.estimator)
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma > 0):
            raise MrdkitError(f"sigma must be a finite positive number, got {self.sigma!r}")
        if self.draws < 1:
            raise MrdkitError(f"draws (K) must be >= 1, got {self.draws}")
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise MrdkitError("batch_size and checkpoint_every must be >= 1")
        if self.token_set not in ("all", "answer"):
            raise MrdkitError(f"token_set must be 'all' or 'answer', got {self.token_set!r}")
        if self.perturb_mode not in ("copy", "lowmem") or self.shard not in ("draws", "samples"):
            raise MrdkitError(f"perturb_mode must be copy|lowmem and shard draws|samples, got {self.perturb_mode!r}, "
                              f"{self.shard!r}")
        return self


def _unwrap(model: Any, tokenizer: Any) -> tuple[torch.nn.Module, Any]:
    """Accept a :class:`mrdkit.models.LoadedModel` or a bare module plus tokenizer."""
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        return model.model, tokenizer or model.tokenizer
    if tokenizer is None:
        raise MrdkitError("score_mrd needs a tokenizer (pass tokenizer=..., or a LoadedModel from load_model)")
    return model, tokenizer


def make_batches(samples: Sequence[Any], tokenizer: Any, cfg: MRDConfig, model: Any = None) -> list[dict[str, Any]]:
    """Encode samples with the run's template/token set and cut them into batches (input order kept).

    With ``model``, sequences are also cut to its context (:func:`mrdkit.models.fit_max_length`; a warning counts
    the truncated samples) rather than indexing past its position table."""
    from mrdkit.data import encode_samples, iter_batches, pad_id
    from mrdkit.models import fit_max_length

    max_length = cfg.max_length if model is None else fit_max_length(model, cfg.max_length)
    encoded = encode_samples(samples, tokenizer, template=cfg.template, token_set=cfg.token_set,
                             max_length=max_length)
    return list(iter_batches(encoded, cfg.batch_size, pad_token_id=pad_id(tokenizer)))


def score_mrd(model: Any, samples: Sequence[Any], *, tokenizer: Any = None, config: Optional[MRDConfig] = None,
              out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
              progress: Optional[Callable[[int, int], None]] = None, distributed: Optional[bool] = None,
              **overrides: Any) -> MRDResult:
    """Score MRD for ``samples`` (arXiv:2504.06658) and, with ``out_dir``, write a resumable run directory.

    Args:
        model: a :class:`~mrdkit.models.LoadedModel` or a causal LM module (then pass ``tokenizer``); float32 or
            float64 weights (bf16/fp16 are refused: a 1e-5 perturbation is below their resolution).
        samples: :class:`~mrdkit.data.Sample` list with unique ids.
        config: :class:`MRDConfig`; keyword ``overrides`` (e.g. ``draws=16, sigma=1e-4``) replace its fields.
        out_dir: run directory (mrd.jsonl, mrd.parquet, draws.safetensors, summary.json, mrd_hist.png).
        resume: continue an interrupted run in ``out_dir`` (refused if its config differs).
        progress: ``progress(draws_done, draws_total)``.
        distributed: split the draws or samples (``shard``) over the ranks of ``torch.distributed``
            (:mod:`mrdkit.scoring.distributed`); None = automatic under torchrun / an initialised group.

    Returns:
        :class:`MRDResult`.
    """
    from mrdkit.models import check_mrd_dtype
    from mrdkit.scoring.engine import score_batches

    module, tokenizer = _unwrap(model, tokenizer)
    cfg = _resolve_config(config, overrides)
    check_mrd_dtype(module)
    if not samples:
        raise MrdkitError("no samples to score")
    from mrdkit.scoring.distributed import score_mrd_distributed, wants_distributed

    from mrdkit.models import model_fingerprint

    fingerprint = model_fingerprint(module) if out_dir is not None else None
    if resume and out_dir is not None and run_is_finished(out_dir, cfg, samples, fingerprint):
        return load_mrd_result(out_dir)  # a finished run with the same settings: nothing left to compute
    if wants_distributed(distributed):
        return score_mrd_distributed(module, samples, tokenizer, cfg, out_dir=out_dir, resume=resume,
                                     overwrite=overwrite, progress=progress)
    run = _open_run(out_dir, cfg, samples, resume, overwrite, model=fingerprint)
    batches = make_batches(samples, tokenizer, cfg, module)
    timing: dict[str, float] = {}
    proxies = _proxies(module, batches, samples, cfg, run, timing)
    diagnostics = _floor_diagnostics(module, batches, cfg)
    start, state = _load_checkpoint(run) if (run is not None and resume) else (0, None)
    tic = time.perf_counter()
    result = score_batches(module, batches, draws=cfg.draws, sigma=cfg.sigma, estimator=cfg.estimator,
                           seed=cfg.seed, scheme=cfg.scheme, param_pattern=cfg.param_pattern,
                           relative=cfg.relative, clip=cfg.clip, progress=progress,
                           checkpoint=_checkpointer(run, cfg), start_draw=start, accumulator=state,
                           perturb_mode=cfg.perturb_mode)
    timing["draws_s"] = time.perf_counter() - tic
    timing["forward_passes"] = float(result.forward_passes)
    out = _to_result(result, proxies, cfg, timing, run)
    out.diagnostics = diagnostics
    if run is not None:
        write_outputs(run, out, result.estimate.first_order_values)
    return out


def _resolve_config(config: Optional[MRDConfig], overrides: dict[str, Any]) -> MRDConfig:
    from dataclasses import replace

    cfg = config or MRDConfig()
    unknown = sorted(set(overrides) - set(asdict(cfg)))
    if unknown:
        raise MrdkitError(f"unknown MRD setting(s): {', '.join(unknown)} (known: {', '.join(asdict(cfg))})")
    return replace(cfg, **overrides).validate()


def run_config(cfg: MRDConfig, samples: Sequence[Any], model: Optional[dict[str, Any]] = None,
               **extra: Any) -> dict[str, Any]:
    """The ``config.json`` of a scoring run: settings, sample count, a digest of the sample ids and the model's
    :func:`~mrdkit.models.model_fingerprint` (so a run is never resumed or reused with other weights)."""
    return {"kind": "mrd", "mrd": asdict(cfg), "samples": len(samples),
            "ids": _digest("\n".join(s.id for s in samples)), "model": model, **extra}


def run_is_finished(out_dir: str | Path, cfg: MRDConfig, samples: Sequence[Any],
                    model: Optional[dict[str, Any]] = None) -> bool:
    """True when ``out_dir`` holds a finished run (``DONE.json``) made with exactly these settings, samples and
    model fingerprint."""
    from mrdkit.runs import json_roundtrip, read_json

    path = Path(out_dir)
    return ((path / "DONE.json").is_file() and (path / "config.json").is_file()
            and read_json(path / "config.json") == json_roundtrip(run_config(cfg, samples, model)))


def _open_run(out_dir, cfg: MRDConfig, samples: Sequence[Any], resume: bool, overwrite: bool,
              model: Optional[dict[str, Any]] = None, **extra: Any):
    if out_dir is None:
        return None
    from mrdkit.runs import RunDir

    run = RunDir(out_dir, run_config(cfg, samples, model, **extra), resume=resume, overwrite=overwrite)
    if not resume:  # a fresh run must not pick up an earlier attempt's cached proxies or saved draws
        for stale in [run.file("proxies.json"), *run.file("state").glob("*.safetensors")]:
            stale.unlink(missing_ok=True)
    return run


def _digest(text: str) -> str:
    import hashlib

    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


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
    proxies = compute_proxies(module, batches, texts=texts, grad_norm=cfg.grad_norm)
    timing["proxies_s"] = time.perf_counter() - tic
    if run is not None:
        run.write_json("proxies.json", proxies)
    return proxies


def _floor_diagnostics(module, batches, cfg: MRDConfig) -> dict[str, Any]:
    """Is sigma visible above the floating-point floor? (warns if not; paper-notes section 1 pitfalls)."""
    if not cfg.diagnostics:
        return {}
    from mrdkit.scoring.engine import floor_check

    return floor_check(module, batches, sigma=cfg.sigma, seed=cfg.seed, param_pattern=cfg.param_pattern,
                       relative=cfg.relative, scheme=cfg.scheme, perturb_mode=cfg.perturb_mode)


def _checkpointer(run, cfg: MRDConfig):
    """Save the accumulator every ``checkpoint_every`` draws (one safetensors file, written atomically)."""
    if run is None:
        return None

    def save(draw: int, state: dict[str, Any]) -> None:
        if (draw + 1) % cfg.checkpoint_every == 0 or draw + 1 == cfg.draws:
            _save_state(run.file(CHECKPOINT), state)

    return save


def _save_state(path: Path, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    from mrdkit.runs import atomic_path, dumps

    meta = {"estimator": state["estimator"], "n": str(state["n"]), "meta": dumps(state["meta"], indent=None)}
    with atomic_path(path) as tmp:
        save_file({"raw": state["raw"].contiguous()}, str(tmp), metadata=meta)


def _load_checkpoint(run) -> tuple[int, Optional[dict[str, Any]]]:
    """(next draw, accumulator state) of an interrupted run, or (0, None) if it saved no draw yet."""
    path = run.file(CHECKPOINT)
    if not path.exists():
        return 0, None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta, raw = fh.metadata(), fh.get_tensor("raw")
    state = {"estimator": meta["estimator"], "n": int(meta["n"]), "meta": json.loads(meta["meta"]), "raw": raw}
    return int(raw.shape[2]), state


def _to_result(result, proxies, cfg: MRDConfig, timing, run) -> MRDResult:
    est = result.estimate
    return MRDResult(ids=result.ids, mrd=est.mrd, mean=est.mean, stderr=est.stderr, unresolved=est.unresolved,
                     base_logprob=result.base_logprob, n_tokens=result.n_tokens, draws=est.values,
                     first_order_spread=est.first_order_spread, proxies=proxies,
                     config=asdict(cfg) | {"n_perturbed": result.n_perturbed}, timing=timing,
                     out_dir=run.path if run is not None else None)


__all__ = ["MRDConfig", "MRDResult", "load_mrd_result", "run_config", "run_is_finished", "score_mrd"]
