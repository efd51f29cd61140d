"""Mutation check: do the fast unit tests notice single-line bugs in the core math?

Each mutant changes ONE operator or constant in one line of a core module (an estimator, a loss, the method
weights, a sampler, a metric, a correlation), chosen from every candidate by a seeded draw. The mutated copy of the
package is imported instead of the real one (``PYTHONPATH``; the working tree is never touched) and the module's
unit tests run with ``-x``; a mutant is *killed* when a test fails (or the run times out), *survived* otherwise.
Kill rate = killed / mutants. Results: ``docs/robustness.md`` ("Mutation check").

Mutations (the classic operator set, applied to one AST node): comparison ``<``/``<=``/``>``/``>=``/``==``/``!=``
to its neighbour, ``+``/``-`` and ``*``/``/`` swapped, ``and``/``or`` swapped, a unary minus dropped, a number
``c`` replaced by ``c + 1``. Lines inside ``raise`` statements, warnings, f-strings, decorators and docstrings
are left alone (their text is not the logic under test).

Not part of ``make test`` (minutes of CPU). Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/mutation_check.py                  # 20 mutants per module
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/mutation_check.py --per-module 0   # every candidate
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/mutation_check.py --list           # the mutants, no test runs
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# module (relative to src/) -> the fast unit tests that own it
TARGETS = {
    "mrdkit/scoring/estimators.py": ["tests/unit/test_estimators.py", "tests/unit/test_engine.py"],
    "mrdkit/unlearning/losses.py": ["tests/unit/test_losses.py", "tests/unit/test_methods.py"],
    "mrdkit/unlearning/methods.py": ["tests/unit/test_methods.py", "tests/unit/test_losses.py"],
    "mrdkit/samplers.py": ["tests/unit/test_samplers.py"],
    "mrdkit/evaluation/metrics.py": ["tests/unit/test_metrics.py"],
    "mrdkit/evaluation/correlation.py": ["tests/unit/test_correlation.py"],
}
SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
         ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.And: ast.Or, ast.Or: ast.And}


@dataclass
class Mutant:
    """One single-node change: where, what, and the line before / after."""

    module: str
    line: int
    kind: str
    before: str
    after: str
    index: int  # position of the node in the module's candidate list (what `apply` re-finds)
    status: str = "not run"
    seconds: float = 0.0


def _skipped_lines(tree: ast.Module) -> set[int]:
    """Lines whose text is messages or metadata, not logic: raise statements, warnings.warn calls, f-strings,
    decorators and docstrings."""
    lines: set[int] = set()

    def span(node: ast.AST) -> range:
        return range(node.lineno, (node.end_lineno or node.lineno) + 1)

    for node in ast.walk(tree):
        if isinstance(node, (ast.Raise, ast.JoinedStr)):
            lines.update(span(node))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "warn":
            lines.update(span(node))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                lines.update(span(dec))
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None:
            lines.update(span(node.body[0]))
    return lines


def candidates(tree: ast.Module) -> list[tuple[ast.AST, str]]:
    """Every mutable node of ``tree`` (outside :func:`_skipped_lines`) with the kind of change, in walk order."""
    skip, out = _skipped_lines(tree), []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Compare) and type(node.ops[0]) in SWAPS:
            out.append((node, "compare"))
        elif isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAPS:
            out.append((node, "operator"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            out.append((node, "negation"))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
            out.append((node, "constant"))
    return out


def _mutate(node: ast.AST, kind: str) -> ast.AST:
    """The changed node (a new node where the old one must be replaced, else the same node changed in place)."""
    if kind == "compare":
        node.ops[0] = SWAPS[type(node.ops[0])]()
    elif kind == "operator":
        node.op = SWAPS[type(node.op)]()
    elif kind == "negation":
        return node.operand
    else:
        node.value = node.value + 1
    return node


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST) -> None:
        self.target, self.replacement = target, replacement

    def generic_visit(self, node: ast.AST) -> ast.AST:
        return self.replacement if node is self.target else super().generic_visit(node)


def apply(source: str, index: int) -> tuple[str, int, str]:
    """``(mutated module source, line, kind)`` of candidate ``index`` of ``source``. Only the changed line's text
    differs from ``ast.unparse`` of the original (the whole module is unparsed, so comments are dropped)."""
    tree = ast.parse(source)
    node, kind = candidates(tree)[index]
    line = node.lineno
    new = _mutate(node, kind)
    if new is not node:
        tree = _Replace(node, new).visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree)), line, kind


def plan(per_module: int, seed: int) -> list[Mutant]:
    """The mutants to run: ``per_module`` candidates per target module drawn with ``random.Random(seed)``
    (0: all), in line order."""
    mutants = []
    for module in TARGETS:
        source = (ROOT / "src" / module).read_text()
        lines = source.splitlines()
        found = candidates(ast.parse(source))
        picks = range(len(found)) if per_module <= 0 else sorted(
            random.Random(f"{seed}:{module}").sample(range(len(found)), min(per_module, len(found))))
        for index in picks:
            mutated, line, kind = apply(source, index)
            after = _changed_line(ast.unparse(ast.parse(source)), mutated, lines[line - 1])
            mutants.append(Mutant(module, line, kind, lines[line - 1].strip(), after, index))
    return mutants


def _changed_line(original: str, mutated: str, fallback: str) -> str:
    """The first line of ``mutated`` that differs from ``original`` (both unparsed), for the report."""
    for a, b in zip(original.splitlines(), mutated.splitlines()):
        if a != b:
            return b.strip()
    return fallback.strip()


def run_mutant(mutant: Mutant, package: Path, timeout: float) -> Mutant:
    """Write the mutant into the copied package, run its module's tests, restore the copy."""
    target = package / mutant.module
    original = target.read_text()
    mutated, _, _ = apply(original, mutant.index)
    target.write_text(mutated)
    env = {**os.environ, "PYTHONPATH": str(package), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MRDKIT_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    tic = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               *TARGETS[mutant.module]], cwd=ROOT, env=env, capture_output=True, timeout=timeout)
        mutant.status = "survived" if proc.returncode == 0 else "killed"
    except subprocess.TimeoutExpired:
        mutant.status = "killed (timeout)"
    finally:
        target.write_text(original)
    mutant.seconds = round(time.perf_counter() - tic, 1)
    return mutant


def summarize(mutants: list[Mutant]) -> dict:
    """Kill rate overall and per module, and the survivors."""
    def rate(ms: list[Mutant]) -> dict:
        killed = sum(m.status.startswith("killed") for m in ms)
        return {"mutants": len(ms), "killed": killed, "kill_rate": round(killed / len(ms), 4) if ms else None}

    return {**rate(mutants), "modules": {mod: rate([m for m in mutants if m.module == mod]) for mod in TARGETS},
            "survivors": [asdict(m) for m in mutants if m.status == "survived"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-module", type=int, default=20, help="mutants per module (0: every candidate)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw of mutants")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a test run counts as killed")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop (no test runs)")
    parser.add_argument("--json", default="runs/benchmarks/mutation_check.json", help="where to write the results")
    args = parser.parse_args(argv)
    mutants = plan(args.per_module, args.seed)
    if args.list:
        for m in mutants:
            print(f"{m.module}:{m.line} [{m.kind}] {m.before}  ->  {m.after}")
        return {"mutants": len(mutants)}
    with tempfile.TemporaryDirectory(prefix="mrdkit-mutants-") as tmp:
        package = Path(tmp)
        shutil.copytree(ROOT / "src" / "mrdkit", package / "mrdkit",
                        ignore=shutil.ignore_patterns("__pycache__", "resources"))
        os.symlink(ROOT / "src" / "mrdkit" / "resources", package / "mrdkit" / "resources")
        for i, mutant in enumerate(mutants, 1):
            run_mutant(mutant, package, args.timeout)
            print(f"[{i}/{len(mutants)}] {mutant.status:<16} {mutant.module}:{mutant.line} {mutant.before}  ->  "
                  f"{mutant.after} ({mutant.seconds} s)", file=sys.stderr, flush=True)
    result = {"per_module": args.per_module, "seed": args.seed, **summarize(mutants)}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"kill rate {result['killed']}/{result['mutants']} = {result['kill_rate']:.1%}")
    for mod, r in result["modules"].items():
        print(f"  {mod}: {r['killed']}/{r['mutants']}")
    for s in result["survivors"]:
        print(f"  survived: {s['module']}:{s['line']} {s['before']}  ->  {s['after']}")
    return result


if __name__ == "__main__":
    main()
