"""Options and helpers shared by several ``mrd`` commands (model/data loading, overrides, summaries)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

ENCODING_HELP = ("how prompt + answer become tokens: joint (one string, as TOFU; every answer token scored) | "
                 "community (open-unlearning's exact mask, first answer token of 'Answer: ' masked) | separate")
TOKEN_SET_HELP = "tokens scored: all (the MRD authors': after the first, before EOS) | all_eos | answer"


def load_data(spec: str, *, split: Optional[str] = None, limit: Optional[int] = None, question_key=None,
              answer_key=None, text_key=None) -> list:
    """Samples from a data spec: ``tofu:<split>``, a TOFU folder (+ ``split``), a file, or a hub id."""
    from mrdkit.data import load_samples

    samples = load_samples(spec, split=split, question_key=question_key, answer_key=answer_key, text_key=text_key)
    return samples[:limit] if limit else samples


def chunk_texts(samples: Sequence[Any], tokenizer: Any, length: int) -> list:
    """Raw-text documents -> ``length``-token windows (:func:`mrdkit.data.chunk_documents`, the MUSE-News path);
    other samples pass through. A document ``<source>:<row>`` gives chunks ``<source>:<row>:<chunk>``."""
    from mrdkit.data import chunk_documents
    from mrdkit.errors import MrdkitError

    if length < 1:
        raise MrdkitError(f"--chunk-tokens must be >= 1, got {length}")
    out: list = []
    for sample in samples:
        if sample.kind != "text":
            out.append(sample)
            continue
        source, _, doc = sample.id.rpartition(":")
        out.extend(chunk_documents([sample.text], tokenizer, length=length, min_length=min(16, length),
                                   doc_ids=[doc or "0"], source=source or sample.id))
    if not out:
        raise MrdkitError(f"no chunks of {length} tokens: every document is shorter than {min(16, length)} tokens")
    return out


def load_model_for(spec: str, samples: Sequence[Any], *, dtype: str = "float32", device: str = "auto",
                   trust_remote_code: bool = False, for_mrd: bool = False, seed: int = 0, device_map: Any = None):
    """The model a ``--model`` option names (:func:`mrdkit.testbed.specs.load_model`: testbed names, directories,
    hub ids, ``tiny``, ``smollm2``); a ``tiny`` model's tokenizer is fitted on the samples' text."""
    from mrdkit.testbed.specs import load_model

    texts = [s.text for s in samples] if spec.startswith("tiny") and samples else None
    extra = {"device_map": device_map} if device_map is not None else {}
    return load_model(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code, for_mrd=for_mrd,
                      tiny_texts=texts, seed=seed, **extra)


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Optional[Sequence[str]] = None) -> None:
    """Print rows as a rich table (floats with 4 significant digits)."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    columns = list(columns or rows[0].keys())
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in columns])
    Console().print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
