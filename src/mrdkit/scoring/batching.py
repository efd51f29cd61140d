"""Canonical re-batching for MRD scoring: every sample padded to a width set by its own length alone.

Why: on CPU a forward pass is bitwise independent of the batch size at a fixed padded width, but NOT of the
width, so :func:`canonical_batches` makes the scores of :mod:`mrdkit.scoring.engine` bitwise independent of the
caller's batching (and trims padding). Re-exported by :mod:`mrdkit.scoring.engine`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import torch

from mrdkit.logprob import IGNORE_INDEX

Batch = Mapping[str, Any]
_KEYS = ("input_ids", "attention_mask", "labels")


def batch_ids(batches: list[Batch]) -> list[str]:
    """Sample ids in batch order (``str`` of each ``ids`` entry; the running row index where a batch has none)."""
    ids: list[str] = []
    for b in batches:
        ids.extend(str(i) for i in b.get("ids", range(len(ids), len(ids) + b["input_ids"].shape[0])))
    return ids


def _row_length(batch: Batch, i: int) -> int:
    """Used length of row i under right padding: one past the last attended or scored position."""
    used = (batch["attention_mask"][i] != 0) | (batch["labels"][i] != IGNORE_INDEX)
    idx = used.nonzero()
    return int(idx.max()) + 1 if idx.numel() else 1


def canonical_batches(batches: Iterable[Batch], multiple: int = 8, max_width: Optional[int] = None
                      ) -> tuple[list[Batch], list[str], torch.Tensor]:
    """Re-batch so that every sample is padded to ``round_up(length, multiple)``, a width set by itself alone.

    Why: on CPU a forward pass is bitwise independent of the batch size at a fixed padded width, but NOT of the
    width (softmax and attention products reduce over the key axis; tiny fp32 GPT-2: half the samples change).
    A per-sample width makes MRD bitwise independent of the caller's batching and trims padding. Rows per batch
    stay <= the largest input batch; ``max_width`` (the model's position limit) caps the width.

    Returns:
        (batches, ids in input order, order) where ``order[j]`` is the input position of canonical row j.
    """
    batches, rows = list(batches), []  # rows: (width, input position, input_ids, attention_mask, labels)
    ids = batch_ids(batches)
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            length = _row_length(batch, i)
            width = -(-length // multiple) * multiple
            width = max(length, min(width, max_width)) if max_width else width
            rows.append((width, len(rows)) + tuple(batch[k][i, :length] for k in _KEYS))
    max_rows = max((b["input_ids"].shape[0] for b in batches), default=1)
    groups: list[list[tuple]] = []
    for row in sorted(rows, key=lambda r: (r[0], r[1])):
        if not groups or groups[-1][0][0] != row[0] or len(groups[-1]) == max_rows:
            groups.append([])
        groups[-1].append(row)
    out = [_pad_group(group, ids) for group in groups]
    return out, ids, torch.tensor([row[1] for group in groups for row in group], dtype=torch.long)


def _pad_group(group: list[tuple], ids: list[str]) -> dict[str, Any]:
    """Right-pad trimmed rows of one width into a batch (pad input 0, attention 0, labels -100)."""
    width = group[0][0]
    batch: dict[str, Any] = {}
    for j, (key, fill) in enumerate(zip(_KEYS, (0, 0, IGNORE_INDEX))):
        batch[key] = torch.full((len(group), width), fill, dtype=group[0][2 + j].dtype)
        for r, row in enumerate(group):
            batch[key][r, :row[2 + j].shape[0]] = row[2 + j]
    batch["ids"] = [ids[row[1]] for row in group]
    return batch
