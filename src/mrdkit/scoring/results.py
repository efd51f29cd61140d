"""The result of an MRD scoring run: :class:`MRDResult`, its run-directory files and loading them back.

A finished run directory (``score_mrd(..., out_dir=...)``) holds ``mrd.jsonl`` (one row per sample),
``mrd.parquet`` (the same table), ``draws.safetensors`` (per-draw values, shape ``(N, K)``), ``summary.json`` and
``mrd_hist.png``. :func:`load_mrd_result` rebuilds the :class:`MRDResult` from it, bit-exactly (JSON floats round
trip exactly; draws are stored raw), so finished scoring never has to be recomputed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from mrdkit.errors import MrdkitError

# columns of mrd.jsonl written from the result's own tensors; every other column is a proxy
_CORE_COLUMNS = ("id", "mrd", "stderr", "resolved", "curvature", "base_logprob", "n_tokens", "first_order_spread")


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
        """One JSON-ready row per sample (the ``mrd.jsonl`` schema)."""
        out = []
        for i, sid in enumerate(self.ids):
            row = {"id": sid, "mrd": float(self.mrd[i]), "stderr": float(self.stderr[i]),
                   "resolved": not bool(self.unresolved[i]), "curvature": float(self.mean[i]),
                   "base_logprob": float(self.base_logprob[i]), "n_tokens": int(self.n_tokens[i])}
            if self.first_order_spread is not None:
                row["first_order_spread"] = float(self.first_order_spread[i])
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
        return {"n_samples": len(self.ids), "mrd_mean": float(mrd.mean()), "mrd_median": float(mrd.median()),
                "mrd_min": float(mrd.min()), "mrd_max": float(mrd.max()),
                "unresolved": int(self.unresolved.sum()), "unresolved_fraction": float(self.unresolved.double().mean()),
                "config": self.config, "timing": self.timing, "diagnostics": self.diagnostics}


def write_outputs(run: Any, out: MRDResult, first_order_values: Optional[torch.Tensor] = None) -> None:
    """Write the result files into ``run`` (a :class:`~mrdkit.runs.RunDir`) atomically and mark it finished."""
    from safetensors.torch import save_file

    from mrdkit import plots
    from mrdkit.runs import atomic_path

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
    return MRDResult(ids=ids, mrd=column("mrd"), mean=column("curvature"), stderr=column("stderr"),
                     unresolved=~column("resolved", torch.bool), base_logprob=column("base_logprob"),
                     n_tokens=column("n_tokens", torch.long), draws=draws, first_order_spread=spread,
                     proxies={k: v for k, v in proxies.items() if v}, config=summary.get("config", {}),
                     timing=summary.get("timing", {}), diagnostics=summary.get("diagnostics", {}), out_dir=path)
