"""The package's layers stay apart: the format needs no torch, the runtime imports no training or
evaluation code, modalities import no CLI, and no module imports another in a cycle.

    python -m pytest tests/test_layering.py -q     # prints nothing when the layering holds

The import graph is read from the source (every import statement, at module level or in a function),
so it also catches an import that only runs on some path.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from coinpp.evaluation.conformance import ROOT

PACKAGE = Path(__file__).resolve().parent.parent / "coinpp"

# The path from bytes to symbols, and what `coin info` and `coin codecs` need.
FORMAT = {"coinpp.container", "coinpp.entropy", "coinpp.spec", "coinpp.presets", "coinpp.ladders", "coinpp.bitstream",
          "coinpp.quantize",
          "coinpp.errors", "coinpp.files", "coinpp.malloc", "coinpp.cli", "coinpp.cli.common", "coinpp.cli.inspect"}
# Encoding and decoding.
RUNTIME = {"coinpp.encoder", "coinpp.decoder", "coinpp.codec", "coinpp.fit", "coinpp.synthesis", "coinpp.postfilter",
           "coinpp.model", "coinpp.patching", "coinpp.batch", "coinpp.overfit", "coinpp.device"} | FORMAT - {
    "coinpp.cli", "coinpp.cli.common", "coinpp.cli.inspect"}
TRAINING_AND_EVALUATION = ("coinpp.training", "coinpp.evaluation")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> tuple[set[str], set[str], list[str]]:
    """(coinpp modules imported, top-level packages imported, coinpp modules imported inside a function)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    inner: list[str] = []
    ours: set[str] = set()
    outside: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from . import x` names modules; `from .m import f` names m
                targets = [f"{base}.{a.name}" for a in child.names] if child.module is None else [base]
            for t in targets:
                if t.split(".")[0] == "coinpp":
                    ours.add(t)
                    if in_function:
                        inner.append(t)
                else:
                    outside.add(t.split(".")[0])
            visit(child, nested)

    visit(tree, False)
    return ours, outside, inner


def graph() -> dict[str, tuple[set[str], set[str], list[str]]]:
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        ours, outside, inner = imports(p)
        # `from coinpp import codec` names a module; `from coinpp.codec import Codec` names codec
        resolved = {t if t in known else t.rsplit(".", 1)[0] for t in ours}
        out[module_name(p)] = ({t for t in resolved if t in known and t != module_name(p)}, outside, inner)
    return out


def reach(g: dict, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in g[todo.pop()][0]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def parents(name: str) -> set[str]:
    """A module's packages, whose __init__ runs first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


GRAPH = graph()


def test_there_is_no_import_cycle():
    cycles = sorted(m for m in GRAPH if m in reach(GRAPH, m))
    assert cycles == []


def test_no_coinpp_module_is_imported_inside_a_function():
    inner = {m: v[2] for m, v in GRAPH.items() if v[2]}
    assert inner == {}


@pytest.mark.parametrize("module", sorted(FORMAT))
def test_the_format_layer_needs_no_torch(module):
    for m in {module} | reach(GRAPH, module) | parents(module):
        assert "torch" not in GRAPH[m][1], f"{module} reaches {m}, which imports torch"


@pytest.mark.parametrize("module", sorted(RUNTIME))
def test_the_runtime_imports_no_training_evaluation_or_cli(module):
    bad = sorted(m for m in reach(GRAPH, module) if m.startswith((*TRAINING_AND_EVALUATION, "coinpp.cli")))
    assert bad == []


def test_modalities_import_no_runtime_training_evaluation_or_cli():
    for module in (m for m in GRAPH if m.startswith("coinpp.modalities")):
        allowed = {"coinpp.errors", "coinpp.container"} | {m for m in GRAPH if m.startswith("coinpp.modalities")}
        assert reach(GRAPH, module) <= allowed, module


def test_coin_info_and_symbol_decoding_run_without_torch():
    stream = next(p for p in sorted(ROOT.glob("*.coin")) if not p.name.startswith("coin-"))
    code = f"""
import sys
from coinpp.bitstream import decode_symbols, parse
from coinpp.cli import cli
symbols = decode_symbols(parse(open({str(stream)!r}, 'rb').read()))
assert symbols.size > 0
try:
    cli(['info', {str(stream)!r}, '--json'], standalone_mode=False)
    cli(['codecs', '--json'], standalone_mode=False)
finally:
    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')
"""
    env_path = str(ROOT / "codecs")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "COIN_CODECS_PATH": env_path})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("NO-TORCH") and '"codec"' in r.stdout
