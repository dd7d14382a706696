"""Every module the package or its tests import is the standard library, the project, or a dependency that
pyproject.toml declares: a fresh environment built from the declared dependencies has all of them.

The package's module-level imports must be core dependencies; an import inside a function (done only when
a command needs it, like scipy for `data prepare`) may come from an extra. The tests may use the core
dependencies and the ``test`` extra.
"""
from __future__ import annotations

import ast
import functools
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "metaprompt"
TESTS = ROOT / "tests"
PROJECT_MODULES = {"metaprompt"} | {p.stem for p in TESTS.glob("*.py")}


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(core dependencies, {extra: dependencies}) from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the installed metadata says the same
        return _declared_from_metadata()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {normalise(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}

    extras = {extra: names(reqs) for extra, reqs in project.get("optional-dependencies", {}).items()}
    return names(project["dependencies"]), extras


def _declared_from_metadata() -> tuple[set[str], dict[str, set[str]]]:
    core, extras = set(), {}
    for requirement in metadata.requires("metaprompt-vl") or []:
        name = normalise(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        (extras.setdefault(extra.group(1), set()) if extra else core).add(name)
    return core, extras


def imports(folder: Path) -> list[tuple[str, str, bool]]:
    """(file:line within ``folder``, top-level module, imported at module level) for every absolute import
    under ``folder``."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            where = f"{path.relative_to(folder)}:{node.lineno}"
            found += [(where, m.split(".")[0], id(node) in top_level) for m in modules]
    return found


@functools.cache
def installed_modules() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions that provide it."""
    return metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    return {normalise(d) for d in installed_modules().get(module, [])}


def undeclared(folder: Path, allowed_at_top: set[str], allowed_inside: set[str]) -> list[str]:
    problems = []
    for where, module, at_top in imports(folder):
        if module in sys.stdlib_module_names or module in PROJECT_MODULES:
            continue
        dists = distributions_of(module)
        allowed = allowed_at_top if at_top else allowed_inside
        if not dists:
            problems.append(f"{where}: imports {module!r}, which no installed distribution provides")
        elif not dists & allowed:
            problems.append(f"{where}: imports {module!r} (from {', '.join(sorted(dists))}), which pyproject.toml "
                            f"does not declare {'as a dependency' if at_top else 'as a dependency or extra'}")
    return problems


def test_the_package_imports_only_declared_dependencies():
    core, extras = declared()
    anywhere = core.union(*extras.values())
    assert undeclared(PACKAGE, core, anywhere) == []


def test_the_tests_import_only_core_and_test_dependencies():
    core, extras = declared()
    allowed = core | extras.get("test", set())
    assert undeclared(TESTS, allowed, allowed) == []


def test_the_check_finds_an_undeclared_import(tmp_path):
    """The walk itself works: a file importing a module nobody declared is reported."""
    (tmp_path / "uses_undeclared.py").write_text("import pytest\nimport yaml\n\ndef f():\n    import scipy\n")
    problems = undeclared(tmp_path, {"pyyaml"}, {"pyyaml"})
    assert any("'pytest'" in p for p in problems) and any("'scipy'" in p for p in problems)
    assert not any("'yaml'" in p for p in problems)


@pytest.mark.parametrize("extra", ["prepare", "test"])
def test_scipy_is_declared_where_data_prepare_and_the_tests_need_it(extra):
    assert "scipy" in declared()[1][extra]
