"""Shared helpers of the MRD benchmarks: module loading, environment, model and data loading, timers, tables, JSON,
peak RSS.

The benchmarks run on a small shared machine whose absolute speed drifts, so every script reports RATIOS of runs
interleaved in one process (see ``benchmarks/README.md``). Nothing here changes the library; it only calls it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Optional, Sequence

# Set before torch/transformers are imported: an accidental hub lookup would otherwise retry for ~47 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MRDKIT_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "runs" / "benchmarks"  # runs/ is git-ignored; measured numbers are copied into the docs
QUICK_SPLIT = "forget01"  # shipped inside the package: --quick works without shared/data
QUICK_MODEL = "tiny-gpt2:d64-l1-h2-v512"  # --quick: seconds, whatever the testbed
MODULE_PREFIX = "mrdkit_benchmarks_"  # benchmarks/<name>.py is loaded as module mrdkit_benchmarks_<name>


# --------------------------------------------------------------------------------------- module loading


def load(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as module ``mrdkit_benchmarks_<name>``, executed once per process.

    Why not ``import <name>``: benchmarks/ is not a package, and a bare ``import common`` could pick up another
    project's module of that name. The entry scripts load this file the same way, under the name ``load("common")``
    would give it, so every benchmark module imports it as ``mrdkit_benchmarks_common``.
    """
    key = MODULE_PREFIX + name
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).resolve().with_name(f"{name}.py"))
        module = sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[key]


# ------------------------------------------------------------------------------------------ environment


def setup_torch(threads: int) -> str:
    """Pin the CPU thread count (0 = leave torch's default) and return the device name ``auto`` resolves to.

    Why pin: on a 2-core machine shared with other jobs, 2 threads make a forward pass wait for a descheduled
    thread, and timings scatter by up to 10x; 1 thread is slower but steady, which ratios need.
    """
    import torch

    from mrdkit.models import resolve_device

    if threads > 0:
        torch.set_num_threads(threads)
    return str(resolve_device("auto"))


def environment(device: str) -> dict[str, Any]:
    """Versions, thread count and device of this run (written into every JSON result)."""
    import torch

    from mrdkit.runs import provenance

    info = provenance()
    info.update(device=device, threads=torch.get_num_threads(), cpu_count=os.cpu_count())
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------------------------------- model and data


def tofu_texts(split: str) -> list[str]:
    """Tokenizer training texts: questions and answers of TOFU ``full`` (of ``split`` alone for the quick split,
    which must work from the package's embedded subset)."""
    from mrdkit.data import load_tofu

    source = load_tofu(split if split == QUICK_SPLIT else "full")
    return list(dict.fromkeys(t for s in source for t in (s.prompt, s.answer) if t))


def load_bench_model(spec: str, dtype: str, device: str, split: str):
    """The benchmark model as a :class:`mrdkit.models.LoadedModel` and a one-line description.

    ``auto``: the packaged/cached TOFU testbed target model if one exists (trained, so its MRD is meaningful),
    else ``tiny``. A ``tiny...`` spec builds that tiny GPT-2/Llama with random weights and a BPE fitted on TOFU
    text; anything else goes to :func:`mrdkit.models.load_model`.
    """
    from mrdkit.errors import MrdkitError
    from mrdkit.models import load_model

    if spec in ("auto", "testbed"):
        try:
            from mrdkit.testbed.tofu import load_testbed

            return load_testbed("tiny", "target", dtype=dtype, device=device, for_mrd=True), "testbed:target"
        except (ImportError, MrdkitError):
            if spec == "testbed":
                raise
        spec = "tiny"
    texts = tofu_texts(split) if spec.startswith("tiny") else None
    lm = load_model(spec, dtype=dtype, device=device, for_mrd=True, tiny_texts=texts)
    what = "random weights, BPE fitted on TOFU text" if texts is not None else "loaded"
    return lm, f"{lm.spec} ({what})"


def tofu_samples(split: str, n: int) -> list:
    """The first ``n`` samples of a TOFU split (all of them when ``n`` exceeds its size)."""
    from mrdkit.data import load_tofu

    return load_tofu(split)[:n]


def load_bench_inputs(spec: str, dtype: str, device: str, split: str, n: int, batch_size: int):
    """Model and data of one benchmark run: ``(lm, description, samples, batches)`` from :func:`load_bench_model`,
    the first ``n`` samples of ``split`` (:func:`tofu_samples`) and their batches (:func:`encode`)."""
    lm, what = load_bench_model(spec, dtype, device, split)
    samples = tofu_samples(split, n)
    return lm, what, samples, encode(samples, lm.tokenizer, batch_size)


def encode(samples: Sequence[Any], tokenizer: Any, batch_size: int) -> list[dict[str, Any]]:
    """Collated batches exactly as ``score_mrd`` builds them, with the reference code's token set ``all``."""
    from mrdkit.scoring.config import MRDConfig
    from mrdkit.scoring.mrd import make_batches

    return make_batches(samples, tokenizer, MRDConfig(token_set="all", batch_size=batch_size))


def chunks(items: Sequence[Any], n: int) -> list[list[Any]]:
    """``items`` cut into ``n`` contiguous, nearly equal, non-empty parts (fewer when there are fewer items)."""
    n = max(1, min(n, len(items)))
    bounds = [round(i * len(items) / n) for i in range(n + 1)]
    return [list(items[a:b]) for a, b in zip(bounds, bounds[1:])]


# ------------------------------------------------------------------------------------------------ timing


def sync(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


@contextmanager
def timed(device: str, out: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the block (GPU work included) to ``out[key]`` and this process's CPU time to
    ``out[cpu_key(key)]``.

    Why both: on a shared CPU the wall clock also counts the time other jobs hold the core, which changes from
    one run to the next; with one thread the process CPU time counts only our own work and is far steadier.
    """
    sync(device)
    tic, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        sync(device)
        out[key] = out.get(key, 0.0) + time.perf_counter() - tic
        out[cpu_key(key)] = out.get(cpu_key(key), 0.0) + time.process_time() - cpu


def cpu_key(key: str) -> str:
    """``total_s`` -> ``total_cpu_s``: where :func:`timed` puts the CPU time."""
    return key[:-2] + "_cpu_s" if key.endswith("_s") else key + "_cpu"


def median(values: Sequence[float]) -> float:
    """Median, NaN for an empty list."""
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------- output helpers


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A GitHub-markdown table (also readable in a terminal)."""
    cells = [[_fmt(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def write_json(path: Optional[str | Path], obj: Any) -> Optional[Path]:
    """Write ``obj`` as JSON atomically (``None``: do nothing); returns the path."""
    if path is None:
        return None
    from mrdkit.runs import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)
    return path


def log(msg: str) -> None:
    """Progress line on stderr (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ memory


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M).group(1))


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mib() -> float:
    """Current resident set size (VmRSS) in MiB."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Peak resident set size (VmHWM) in MiB since start or the last :func:`reset_peak_rss`."""
    return _status_kib("VmHWM") / 1024
