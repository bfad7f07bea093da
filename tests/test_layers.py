"""The package's layers, kept by parsing it: imports run one way (each module imports its own layer and the layers
below it), no rlaif import sits inside a function, no import cycle, and rlaif/portable uses the standard library
only (the exported Lambda carries it whole). A failure names the file and line of the import.

The layer list lives here; docs/architecture.md describes the same layers, in the same order (checked below).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "rlaif"

LAYERS = [  # bottom to top
    ("base", ["rlaif", "rlaif.errors", "rlaif.portable", "rlaif.common"]),
    ("config", ["rlaif.config"]),
    ("data", ["rlaif.data"]),
    ("judge", ["rlaif.judge"]),
    ("rewards", ["rlaif.rewards"]),
    ("nova", ["rlaif.nova"]),
    ("tiny", ["rlaif.tiny"]),
    ("factory", ["rlaif.factory"]),
    ("eval", ["rlaif.eval"]),
    ("train", ["rlaif.train"]),
    ("cli", ["rlaif.cli", "rlaif.train.__main__"]),  # `python -m rlaif.train` is a command-line entry point
]


def modules() -> dict[str, Path]:
    """Every module of the package: .py files in folders that are packages (templates are not modules)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        folders = path.relative_to(ROOT).parent.parts
        if not all((ROOT.joinpath(*folders[:i + 1]) / "__init__.py").exists() for i in range(len(folders))):
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = modules()


def layer_of(module: str) -> int | None:
    """The index of the module's layer: the longest prefix in LAYERS that names it or a package above it."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            exact_only = p == "rlaif"  # the package itself, not everything in it
            if (module == p or (not exact_only and module.startswith(p + "."))) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def imports(module: str, path: Path):
    """(imported module, line, inside a function or class) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"

    def walk(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            if isinstance(child, ast.Import):
                for a in child.names:
                    yield a.name, child.lineno, inner
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = module.split(".") if is_pkg else module.split(".")[:-1]
                    parts = parts[:len(parts) - (child.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                for a in child.names:
                    target = f"{base}.{a.name}"
                    yield (target if target in MODULES else base), child.lineno, inner
            yield from walk(child, inner)
    yield from walk(tree, False)


def rlaif_imports():
    for module, path in MODULES.items():
        seen = set()
        for target, line, nested in imports(module, path):
            if (target == "rlaif" or target.startswith("rlaif.")) and (target, line) not in seen:
                seen.add((target, line))
                yield module, path, target, line, nested


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"modules in no layer of tests/test_layers.py: {missing}"


def test_no_layer_imports_a_layer_above_it():
    bad = []
    for module, path, target, line, _ in rlaif_imports():
        low, high = layer_of(module), layer_of(target)
        if high is not None and low is not None and high > low:
            bad.append(f"{where(path, line)}: {module} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]}), "
                       "a layer above it")
    assert not bad, "\n" + "\n".join(bad)


def test_no_rlaif_import_inside_a_function():
    bad = [f"{where(path, line)}: {module} imports {target} inside a function or class; import it at the top "
           "(a lazy import of our own code is a sign that something lives in the wrong layer)"
           for module, path, target, line, nested in rlaif_imports() if nested]
    assert not bad, "\n" + "\n".join(bad)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    lines: dict[tuple[str, str], str] = {}
    for module, path, target, line, _ in rlaif_imports():
        if target in MODULES and target != module:
            graph[module].add(target)
            lines.setdefault((module, target), where(path, line))
    # Tarjan's strongly connected components: any component of two or more modules is a cycle
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    msgs = []
    for comp in cycles:
        edges = [f"  {lines[(a, b)]}: {a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
        msgs.append(f"import cycle of {len(comp)} modules:\n" + "\n".join(edges))
    assert not cycles, "\n" + "\n".join(msgs)


def test_portable_uses_the_standard_library_only():
    bad = []
    for module, path in MODULES.items():
        if not module.startswith("rlaif.portable"):
            continue
        for target, line, _ in imports(module, path):
            top = target.split(".")[0]
            ours = target == "rlaif.portable" or target.startswith("rlaif.portable.")
            if not ours and top != "__future__" and top not in sys.stdlib_module_names:
                bad.append(f"{where(path, line)}: {module} imports {target}, which the exported Lambda cannot")
    assert not bad, "\n" + "\n".join(bad)


def test_the_layer_rule_sees_a_violation(tmp_path):
    """The checks above can fail: a lower layer importing a higher one, inside a function, is seen."""
    path = tmp_path / "probe.py"
    path.write_text("import json\n\n\ndef f():\n    from rlaif.factory import make_judge\n")
    found = [(t, line, nested) for t, line, nested in imports("rlaif.judge.probe", path)]
    assert ("rlaif.factory", 5, True) in found
    assert layer_of("rlaif.factory") > layer_of("rlaif.judge.probe")


def test_docs_architecture_lists_the_same_layers():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [ln.split("|")[1].strip().strip("*") for ln in text.splitlines()
            if ln.startswith("| ") and ln.split("|")[1].strip().strip("*") in {name for name, _ in LAYERS}]
    assert rows == [name for name, _ in LAYERS], "docs/architecture.md's layer table is out of date"
