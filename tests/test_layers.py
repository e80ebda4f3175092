"""Structure: imports point one way (base → artifacts → exporter → calibration → engines → eval → reproduction →
api → cli), no import cycles (function-level imports included), and the CLI writes no artefact itself."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "qbert"
LAYERS = [  # (layer, module-name prefixes); a module may import only from its own layer or below
    (0, ("qbert._version", "qbert.errors", "qbert.atomic", "qbert.output_checks", "qbert.progress", "qbert.data", "qbert.encoding", "qbert.similarity", "qbert.ort_session",
         "qbert.machine", "qbert.timing", "qbert.arguments", "qbert.ov_session")),
    (1, ("qbert.artifacts",)),
    (2, ("qbert.exporter",)),
    (3, ("qbert.calibration",)),
    (4, ("qbert.engines",)),
    (5, ("qbert.eval",)),
    (6, ("qbert.reproduction", "qbert.reproduction_rows")),
    (7, ("qbert.api",)),
    (8, ("qbert.cli", "qbert.cli_output", "qbert.cli_rules", "qbert.cli_measure", "qbert")),  # the package facade re-exports the API lazily
]


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        name = ".".join(f.relative_to(PKG.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every qbert module each module imports, at any depth of its code (inside functions too)."""
    graph = {}
    for name, f in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("qbert"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("qbert")}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def layer(name: str) -> int:
    """The layer of the longest prefix naming the module (`qbert.cli` before the facade `qbert`)."""
    matches = [(len(p), n) for n, prefixes in LAYERS for p in prefixes if name == p or name.startswith(p + ".")]
    return max(matches)[1] if matches else -1


def test_every_module_has_a_layer_and_imports_point_down():
    mods = modules()
    unplaced = [m for m in mods if m != "qbert" and layer(m) == layer("qbert")
                and not any(m == p or m.startswith(p + ".") for p in LAYERS[-1][1] if p != "qbert")]
    assert not unplaced, f"modules with no layer of their own (add them to LAYERS): {unplaced}"
    graph = imports(mods)
    upward = [f"{a} ({layer(a)}) → {b} ({layer(b)})" for a, deps in graph.items() for b in deps
              if layer(b) > layer(a) and b != "qbert._version"]
    assert not upward, upward


def test_no_import_cycles():
    graph = imports(modules())
    graph = {a: {b for b in deps if b != "qbert"} for a, deps in graph.items()}  # the facade is lazy
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
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
    assert not cycles, cycles


def test_the_cli_writes_no_artefact_itself():
    tree = ast.parse((PKG / "cli.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not names & {"write_json", "write_bytes", "save_onnx", "staged", "atomic_path", "emit"}, names


def test_import_qbert_loads_no_heavy_runtime():
    import subprocess
    import sys

    code = ("import sys, qbert; qbert.CalibrationConfig; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
