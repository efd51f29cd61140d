"""Options and helpers shared by several ``mrd`` commands (model/data loading, overrides, summaries)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import typer

ENCODING_HELP = ("how prompt + answer become tokens: joint (one string, as TOFU; every answer token scored) | "
                 "community (open-unlearning's exact mask, first answer token of 'Answer: ' masked) | separate")
TOKEN_SET_HELP = "tokens scored: all (the MRD authors': after the first, before EOS) | all_eos | answer"


# The one data-option vocabulary: every command that reads data files takes these six (mrd score, unlearn, eval,
# data inspect, difficulty truth / score / survival), and mrdkit's data errors name them (mrdkit.data.samples).
QUESTION_KEY = typer.Option(None, "--question-key", help="field holding the question (dotted for nested: qa.q)")
ANSWER_KEY = typer.Option(None, "--answer-key", help="field holding the answer (dotted for nested: qa.a)")
TEXT_KEY = typer.Option(None, "--text-key", help="field holding raw text")
FIELD = typer.Option(None, "--field", help="JSON: the key holding the list of records when the file wraps it in "
                                           "an object, e.g. data for {\"data\": [...]}")
FORMAT = typer.Option(None, "--format", help="file format when the name does not tell it: json | jsonl | csv | "
                                             "tsv | parquet | txt")
ID_KEY = typer.Option(None, "--id-key", help="field holding unique sample ids (default: id if present, else "
                                             "<file>:<row>)")


def data_options(question_key: Optional[str] = None, answer_key: Optional[str] = None,
                 text_key: Optional[str] = None, field: Optional[str] = None, fmt: Optional[str] = None,
                 id_key: Optional[str] = None) -> dict[str, Optional[str]]:
    """The data options of a command as :func:`mrdkit.data.load_samples` keywords (unset ones left out)."""
    given = dict(question_key=question_key, answer_key=answer_key, text_key=text_key, field=field, fmt=fmt,
                 id_key=id_key)
    return {k: v for k, v in given.items() if v is not None}


def load_data(spec: str, *, split: Optional[str] = None, limit: Optional[int] = None,
              options: Optional[dict[str, Optional[str]]] = None) -> list:
    """Samples from a data spec: ``tofu:<split>``, a TOFU folder (+ ``split``), a file, or a hub id, read with the
    command's :func:`data_options`."""
    from mrdkit.data import load_samples

    samples = load_samples(spec, split=split, **(options or {}))
    return samples[:limit] if limit else samples


def check_out(out: Any) -> None:
    """``--out`` checked before any model loads (:func:`mrdkit.runs.check_output_dir`): a folder holding files that
    are not an mrdkit run is refused at once, not after minutes of loading."""
    from mrdkit.runs import check_output_dir

    check_output_dir(out)


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
