"""Small local snapshots of hub dataset repositories, WRITTEN BY THE TESTS in each dataset's exact layout.

Each repository gets the dataset card's ``configs`` YAML (which files make which config / split) and data files
with the hub's column names, types and order: parquet for ``cais/wmdp``, ``cais/wmdp-corpora`` and MUSE,
JSON-lines for PKU-SafeRLHF. The text is synthetic (numbered sentences made up here), never a copy of the data.
``$MRDKIT_HUB_MIRROR`` pointing at the root makes :mod:`mrdkit.data.sources` read these instead of the hub.
"""

from __future__ import annotations

import json
from pathlib import Path


def _card(repo_dir: Path, configs: dict[str, dict[str, str | list[str]]]) -> None:
    """README.md with the ``configs:`` block of a hub dataset card: ``{config: {split: path glob(s)}}``."""
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, paths in splits.items():
            lines.append(f"  - split: {split}")
            paths = [paths] if isinstance(paths, str) else paths
            lines += ["    path:"] + [f"    - {p}" for p in paths]
    (repo_dir / "README.md").write_text("\n".join(lines + ["---", "Synthetic test fixture."]) + "\n")


def _parquet(path: Path, columns: dict[str, list]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _sentences(tag: str, n: int, words: int = 40) -> list[str]:
    """``n`` made-up documents of about ``words`` words (deterministic, distinct per tag and row)."""
    import random

    vocab = ["alpha", "river", "stone", "lamp", "orbit", "cedar", "north", "pixel", "harbor", "violet"]
    texts = []
    for i in range(n):
        rng = random.Random(f"{tag}/{i}")  # seeded by string: the same text on every run and machine
        texts.append(" ".join(f"{rng.choice(vocab)}{rng.randrange(10)}" for _ in range(words)) + f" {tag} {i}.")
    return texts


def write_wmdp(root: Path, n: int = 6) -> None:
    """``cais/wmdp``: configs wmdp-bio / -chem / -cyber, split test; columns answer (int64), question, choices."""
    repo = root / "cais" / "wmdp"
    for subject in ("bio", "chem", "cyber"):
        _parquet(repo / f"wmdp-{subject}" / "test-00000-of-00001.parquet",
                 {"answer": [i % 4 for i in range(n)],
                  "question": [f"Which {subject} option is number {i % 4}?" for i in range(n)],
                  "choices": [[f"option {j} of {subject} {i}" for j in range(4)] for i in range(n)]})
    _card(repo, {f"wmdp-{s}": {"test": f"wmdp-{s}/test-*"} for s in ("bio", "chem", "cyber")})


def write_wmdp_corpora(root: Path, n: int = 4) -> None:
    """``cais/wmdp-corpora``: configs bio-retain / cyber-forget / cyber-retain -corpus, split train; column text."""
    repo = root / "cais" / "wmdp-corpora"
    names = ("bio-retain", "cyber-forget", "cyber-retain")
    for name in names:
        _parquet(repo / f"{name}-corpus" / "train-00000-of-00001.parquet", {"text": _sentences(name, n)})
    _card(repo, {f"{name}-corpus": {"train": f"{name}-corpus/train-*"} for name in names})


def write_muse(root: Path, corpus: str = "News", n: int = 5, old_retain_names: bool = False) -> None:
    """``muse-bench/MUSE-<corpus>``: raw (forget, retain1, retain2, holdout: text), knowmem (forget_qa[_icl],
    retain_qa[_icl]: question, answer), verbmem (forget: prompt, gt), privleak (forget, retain, holdout: text).
    ``old_retain_names``: the earlier release's ``retain2_qa`` / privleak ``retain2`` split names."""
    repo = root / "muse-bench" / f"MUSE-{corpus}"
    ret_qa, ret_pl = ("retain2_qa", "retain2") if old_retain_names else ("retain_qa", "retain")
    configs: dict[str, dict[str, str]] = {}

    def put(config: str, split: str, columns: dict[str, list]) -> None:
        _parquet(repo / config / f"{split}-00000-of-00001.parquet", columns)
        configs.setdefault(config, {})[split] = f"{config}/{split}-*"

    for split in ("forget", "retain1", "retain2", "holdout"):
        put("raw", split, {"text": _sentences(f"{corpus} raw {split}", n, words=120)})
    for split in ("forget_qa", "forget_qa_icl", ret_qa, f"{ret_qa}_icl"):
        k = 3 if split.endswith("icl") else n
        put("knowmem", split, {"answer": [f"answer {i} {split}" for i in range(k)],
                               "question": [f"What is item {i} of {split}?" for i in range(k)]})
    texts = _sentences(f"{corpus} verbmem", n, words=60)
    put("verbmem", "forget", {"prompt": [t[: len(t) // 2] for t in texts], "gt": [t[len(t) // 2:] for t in texts]})
    for split in ("forget", ret_pl, "holdout"):
        put("privleak", split, {"text": _sentences(f"{corpus} privleak {split}", n, words=50)})
    _card(repo, configs)


def safe_rows(n: int = 4) -> list[dict]:
    """PKU-SafeRLHF rows (column order of its JSON-lines files): prompt, two responses, their labels."""
    rows = []
    for i in range(n):
        safe0, safe1 = (i % 2 == 0), (i % 3 == 0)  # rows with 0, 1 or 2 safe responses
        rows.append({"prompt": f"How do I do risky thing {i}?", "response_0": f"Response zero to {i}.",
                     "response_1": f"Response one to {i}.", "prompt_source": "test", "response_0_source": "test",
                     "response_1_source": "test", "is_response_0_safe": safe0, "is_response_1_safe": safe1,
                     "response_0_harm_category": {"Violence": not safe0},
                     "response_1_harm_category": {"Violence": not safe1},
                     "response_0_severity_level": 0 if safe0 else 2, "response_1_severity_level": 0 if safe1 else 1,
                     "better_response_id": i % 2, "safer_response_id": 0 if safe0 else 1,
                     "response_0_sha256": f"{i:064x}", "response_1_sha256": f"{i + 100:064x}"})
    return rows


def write_safe(root: Path, n: int = 4) -> None:
    """``PKU-Alignment/PKU-SafeRLHF``: data/<model>/{train,test}.jsonl; config ``default`` spans the models."""
    repo = root / "PKU-Alignment" / "PKU-SafeRLHF"
    folder = repo / "data" / "Alpaca-7B"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in safe_rows(n)))
    _card(repo, {"default": {"train": ["data/Alpaca-7B/train.jsonl"], "test": ["data/Alpaca-7B/test.jsonl"]},
                 "alpaca-7b": {"train": ["data/Alpaca-7B/train.jsonl"], "test": ["data/Alpaca-7B/test.jsonl"]}})


def write_all(root: Path) -> Path:
    """Every fixture repository under ``root`` (the value for ``$MRDKIT_HUB_MIRROR``)."""
    write_wmdp(root)
    write_wmdp_corpora(root)
    write_muse(root, "News")
    write_muse(root, "Books", old_retain_names=True)
    write_safe(root)
    return root
