"""How the code is laid out: the import graph of src/ has no cycle, and the parts that need no model (the command
line's parser, `metaprompt report` on a finished sweep) import no torch."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "metaprompt"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (also inside functions): ``from . import x`` is
    the submodule x when there is one. Importing a submodule is not counted as importing its package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found |= submodules
            if len(submodules) < len(node.names):  # some names are the module's own attributes
                found.add(target)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted((SRC / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` (a path that ends where it starts), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_to_modules(tmp_path):
    graph = import_graph()
    assert "metaprompt.methods.domain_split" in graph["metaprompt.methods.metaprompt"]
    assert "metaprompt.config" in graph["metaprompt.engine"]
    assert {"metaprompt.data.coop", "metaprompt.data.dg"} <= graph["metaprompt.data"]  # from . import coop, dg


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, " -> ".join(cycle)


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_building_the_command_line_imports_no_torch():
    out = run_python("import sys\nfrom metaprompt.cli import build_parser\nbuild_parser()\n"
                     "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))")
    assert out.strip() == "[]"


def test_report_on_a_finished_sweep_imports_no_torch(tmp_path):
    runs = tmp_path / "runs"
    for seed, (base, new) in enumerate([(80.0, 70.0), (82.0, 72.0)], start=1):
        folder = runs / "base2new" / "coop" / "eurosat" / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({
            "protocol": "base2new", "name": "coop", "method": "coop", "dataset": "eurosat", "seed": seed,
            "shots": 16, "metrics": {"base": base, "new": new, "hm": 2 * base * new / (base + new)}}))
    figure = tmp_path / "report.png"
    out = run_python("import sys\nfrom metaprompt.cli import main\n"
                     f"code = main(['report', {str(runs)!r}, '--figure', {str(figure)!r}])\n"
                     "print(code, 'torch' in sys.modules)")
    lines = out.strip().splitlines()
    assert lines[-1] == "0 False" and figure.is_file()
    assert "| eurosat | 81.00 ± 1.00 | 71.00 ± 1.00 | 75.67 ± 1.00 |" in lines, out


def test_the_suite_runs_on_the_cpu():
    """Unless asked for the GPU tests, the suite hides every GPU from itself and its subprocesses."""
    import os

    import torch

    if os.environ.get("METAPROMPT_TEST_GPU") == "1":
        return
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and not torch.cuda.is_available()
    out = run_python("import torch; print(torch.cuda.is_available())")
    assert out.strip() == "False"
