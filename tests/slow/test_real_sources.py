"""The named sources on the REAL hub datasets, from the Hugging Face cache (or the hub when online).

Slow and data-dependent: each case loads a few rows and checks the schema mrdkit relies on; a dataset that is not
cached (and no network) is skipped with the loader's own one-line message. Run with
``pytest -m slow tests/slow/test_real_sources.py`` after e.g.
``python -c "import datasets; datasets.load_dataset('cais/wmdp', 'wmdp-bio')"`` on a machine with network.
"""

from __future__ import annotations

import pytest

from mrdkit.data import load_samples
from mrdkit.errors import MrdkitError

pytestmark = pytest.mark.slow

CASES = {  # spec -> (kind, rows in the full split when known)
    "wmdp:bio": ("mcq", 1273), "wmdp:chem": ("mcq", 408), "wmdp:cyber": ("mcq", 1987),
    "wmdp-corpus:cyber-forget": ("text", 1000), "wmdp-corpus:cyber-retain": ("text", 4473),
    "muse:news:forget": ("text", 889), "muse:news:knowmem/forget_qa": ("qa", 100),
    "muse:news:verbmem/forget": ("qa", 100), "muse:news:privleak/holdout": ("text", 100),
    "muse:books:forget": ("text", 4), "muse:books:knowmem/retain_qa": ("qa", 100),
    "safe:forget": ("qa", None), "safe:retain:test": ("qa", None),
}


def _load(spec: str, limit: int | None):
    try:
        return load_samples(spec, limit=limit)
    except MrdkitError as err:
        if "not in the Hugging Face cache" in str(err) or "cannot be loaded" in str(err) or "gated" in str(err):
            pytest.skip(str(err)[:200])
        raise


@pytest.mark.parametrize("spec", list(CASES))
def test_real_dataset_has_the_schema_the_loader_expects(spec):
    kind, _ = CASES[spec]
    samples = _load(spec, 5)
    assert samples and {s.kind for s in samples} == {kind}
    if kind == "mcq":
        assert all(len(s.extra["choices"]) == 4 and 0 <= s.extra["answer_index"] < 4 for s in samples)
    if spec.startswith("safe:"):
        assert all(s.prompt and s.answer and "harm_category" in s.extra for s in samples)


@pytest.mark.parametrize("spec", [s for s, (_, n) in CASES.items() if n is not None and n <= 2000])
def test_real_dataset_row_counts(spec):
    assert len(_load(spec, None)) == CASES[spec][1]


def test_real_muse_books_folder_feeds_the_muse_suite(tmp_path):
    from mrdkit.data.sources import muse_folder
    from mrdkit.evaluation.muse import FILES, MuseConfig, load_split

    try:
        folder = muse_folder("books", tmp_path)
    except MrdkitError as err:
        pytest.skip(str(err)[:200])
    cfg = MuseConfig(data_dir=str(folder))
    assert all(len(load_split(label, cfg)) == 100 for label in FILES)
