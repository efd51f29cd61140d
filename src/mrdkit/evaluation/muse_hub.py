"""MUSE from the hub (``muse:news`` / ``muse:books``) through the same suite as the local MUSE-News folder.

:func:`mrdkit.data.sources.muse_folder` writes the hub's evaluation splits (``muse-bench/MUSE-News`` or
``MUSE-Books``: verbmem, knowmem, privleak) in the local folder's layout, and :func:`mrdkit.evaluation.muse.run_muse`
scores them unchanged: VerbMem, KnowMem, PrivLeak and perplexity exactly as on ``shared/data/muse-news`` (Shi et
al. 2024, arXiv:2407.06460). MUSE-Books (the Harry Potter books) is the community's WHP benchmark.

Only the PrivLeak reference differs by corpus: ``PrivLeak = (AUC - AUC_retrain) / AUC_retrain * 100`` with
``AUC_retrain`` from a retain model or log when given, else MUSE's retrained-model constant for the corpus
(``constants.py`` of the MUSE code, ``AUC_RETRAIN[corpus]['forget_holdout_Min-40%']``: news 0.4772, books 0.5393).
"""

from __future__ import annotations

from typing import Any, Optional

from mrdkit.errors import MrdkitError
from mrdkit.evaluation.muse import AUC_RETRAIN_NEWS, MuseConfig, run_muse
from mrdkit.models import resolve_model

AUC_RETRAIN = {"news": AUC_RETRAIN_NEWS, "books": 0.5393}  # MUSE constants.py, forget_holdout_Min-40%


def corpus_of(data: str) -> str:
    """``"muse:books"`` -> ``"books"`` (one-line error for anything else)."""
    head, _, corpus = data.partition(":")
    if head != "muse" or corpus not in AUC_RETRAIN:
        raise MrdkitError(f"MUSE hub data must be muse:news or muse:books, got {data!r}")
    return corpus


def run_from_options(model: Any, tok: Any, store: Any, opts: dict, retain_model: Any, retain_log: Any,
                     dtype: str, device: str, progress: Optional[bool], *, trust_remote_code: bool = False) -> tuple:
    """:func:`mrdkit.evaluation.muse.run_muse` on the hub's corpus named by ``opts["data"]``."""
    from mrdkit.data.sources import muse_folder

    if retain_model is not None and retain_log is not None:
        raise MrdkitError("give either a retain model or a retain log, not both")
    corpus = corpus_of(opts["data"])
    cfg = MuseConfig(data_dir=str(muse_folder(corpus)), limit=opts["limit"], max_length=opts["max_length"],
                     max_prompt_tokens=opts["max_prompt_tokens"], batch_size=opts["batch_size"],
                     auc_retrain=AUC_RETRAIN[corpus])
    retain = retain_log
    if retain_model is not None:
        retain = resolve_model(retain_model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    data, metrics, notes, community, source = run_muse(model, tok, store, cfg, retain=retain, progress=progress)
    if retain is None:  # run_muse names the constant after MUSE-News, its only local corpus
        source = f"MUSE-{corpus.capitalize()} AUC_retrain constant {cfg.auc_retrain} (MUSE constants.py)"
    return data, metrics, notes, community, source
