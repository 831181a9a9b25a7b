"""The architecture rules the code keeps, checked on the source: which g2g package may
import which, which libraries each layer stays free of, and no import cycle.

Every ``import`` and ``from ... import`` of every g2g module (and ``run.py``) is read
with :mod:`ast`, including imports inside functions. ``from g2g.x import y`` counts
as an import of the module ``g2g.x.y`` when that is a submodule, and of the module
that defines ``y`` when ``y`` is one of ``g2g.x``'s lazy re-exports. The table
below is the one shown in docs/architecture.md.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

ANY = None  # "may import any g2g package"
CONFIG_TRACKING_PLOTTING = ("hydra", "omegaconf", "mlflow", "matplotlib")
TRACKING_PLOTTING = ("mlflow", "matplotlib")
TORCH = ("torch", "torchvision", "snntorch")

# package: (g2g packages it may import besides itself, libraries it never imports)
LAYERS: dict[str, tuple[frozenset[str] | None, tuple[str, ...]]] = {
    "snn": (frozenset(), CONFIG_TRACKING_PLOTTING),
    "sparse": (frozenset({"snn"}), CONFIG_TRACKING_PLOTTING),
    "models": (frozenset({"snn", "sparse"}), CONFIG_TRACKING_PLOTTING),
    "data": (frozenset(), CONFIG_TRACKING_PLOTTING),
    "training": (frozenset({"snn", "sparse", "models", "data"}), CONFIG_TRACKING_PLOTTING),
    "hardware": (frozenset(), CONFIG_TRACKING_PLOTTING),
    # the schema names the registries of snn, sparse, models and data only as strings
    # ("g2g.sparse.dst:PRUNE_RULES"), imported when a value is checked
    "config": (frozenset({"tracking"}), TORCH + TRACKING_PLOTTING),
    "build": (frozenset({"snn", "sparse", "models", "data", "training", "hardware", "config"}), TRACKING_PLOTTING),
    "lifecycle": (frozenset({"data", "training", "hardware", "config", "tracking"}), ("matplotlib",)),
    "run": (ANY, ()),
    "tracking": (ANY, TORCH),
    "reporting": (frozenset({"snn", "sparse", "models", "data", "tracking"}), ()),
    # a search's study, pruning hook and report: the run loop calls its hook, the sweeper the rest
    "search": (frozenset({"config", "lifecycle", "tracking", "reporting"}), TORCH),
}
# the only modules that may import Hydra or OmegaConf (a name covers its submodules)
CONFIG_LIBRARIES = ("hydra", "omegaconf")
CONFIG_USERS = ("g2g.config", "g2g.build", "g2g.lifecycle", "g2g.run", "g2g.tracking.sweep_callback",
                "g2g.search.study", "g2g.config_docs", "run")
# top-level helpers every package may import: the lazy re-export helper of the
# __init__s, the atomic file writes of everything that saves state and the lock of what
# jobs sharing a folder prepare once, and the shell quoting of every command g2g prints
SHARED_HELPERS = ("g2g._lazy", "g2g.files", "g2g.shell")


def layer_table() -> str:
    """LAYERS as the Markdown table docs/architecture.md shows."""
    rows = ["| package | may import these g2g packages (besides itself) | never imports |", "|---|---|---|"]
    for package, (allowed, libraries) in LAYERS.items():
        others = "any" if allowed is ANY else ", ".join(f"`g2g.{p}`" for p in LAYERS if p in allowed) or "none"
        rows.append(f"| `g2g.{package}` | {others} | {', '.join(libraries) or '-'} |")
    return "\n".join(rows)


@dataclass(frozen=True)
class Import:
    importer: str  # module that imports
    line: int
    target: str  # the imported module's dotted name (a g2g module or a library module)

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.target}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = {_module_name(p): p for p in sorted((REPO_ROOT / "g2g").rglob("*.py"))}
SOURCES["run"] = REPO_ROOT / "run.py"


def _lazy_exports(tree: ast.Module) -> dict[str, str]:
    """Public name -> submodule, from a package __init__'s ``lazy_exports(__name__, {...})``."""
    exports = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports"
                and len(node.args) == 2 and isinstance(node.args[1], ast.Dict)):
            for key, names in zip(node.args[1].keys, node.args[1].values):
                exports.update({name.value: key.value for name in names.elts})
    return exports


TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in SOURCES.items()}
LAZY = {name: _lazy_exports(tree) for name, tree in TREES.items() if SOURCES[name].name == "__init__.py"}


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module
    package = importer if importer in LAZY else importer.rpartition(".")[0]
    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _imports(importer: str, tree: ast.Module) -> list[Import]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(importer, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            module = _absolute(importer, node)
            for alias in node.names:
                if f"{module}.{alias.name}" in SOURCES:  # from g2g.x import submodule
                    found.append(Import(importer, node.lineno, f"{module}.{alias.name}"))
                elif alias.name in LAZY.get(module, {}):  # from g2g.x import LazyName
                    found.append(Import(importer, node.lineno, f"{module}.{LAZY[module][alias.name]}"))
                else:
                    found.append(Import(importer, node.lineno, module))
    return list(dict.fromkeys(found))  # one entry per (line, target)


IMPORTS = {name: _imports(name, tree) for name, tree in TREES.items()}


def _package(module: str) -> str | None:
    """The g2g subpackage a module belongs to (``g2g.snn.kernels`` -> ``snn``)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "g2g" and len(parts) > 1 and parts[1] in LAYERS else None


def _is_g2g(target: str) -> bool:
    return target == "g2g" or target.startswith("g2g.")


def _library(target: str) -> str:
    return target.split(".")[0]


def _modules_of(package: str) -> list[str]:
    return [name for name in SOURCES if _package(name) == package]


def _importable(modules: list[str]) -> list[str]:
    """Without the ``__main__`` modules (importing one runs its command)."""
    return [m for m in modules if not m.endswith(".__main__")]


def _lines(imports) -> str:
    return "\n  ".join(str(i) for i in imports)


def test_imports_are_read_as_modules_including_relative_and_function_level_ones():
    source = (
        "import torch.nn as nn\n"
        "from g2g.snn import kernels, LIF\n"  # a submodule, and a lazy re-export of g2g.snn.neurons
        "from g2g.sparse.layers import MaskedLinear\n"
        "from . import encoders\n"
        "def build():\n"
        "    from ..models import network\n")
    found = {(i.line, i.target) for i in _imports("g2g.snn.example", ast.parse(source))}
    assert found == {(1, "torch.nn"), (2, "g2g.snn.kernels"), (2, "g2g.snn.neurons"), (3, "g2g.sparse.layers"),
                     (4, "g2g.snn.encoders"), (6, "g2g.models.network")}


# --- the rules --------------------------------------------------------------------

def test_every_g2g_subpackage_has_a_row_in_the_layer_table():
    subpackages = {p.parent.name for p in (REPO_ROOT / "g2g").glob("*/__init__.py")}
    assert subpackages == set(LAYERS), (
        f"add {sorted(subpackages - set(LAYERS))} to LAYERS (and to docs/architecture.md); "
        f"remove {sorted(set(LAYERS) - subpackages)}")


def test_the_package_build_includes_every_g2g_package():
    """pyproject's package patterns (matched as setuptools does, with fnmatch) cover
    every folder of g2g/ with an __init__.py, so an installed g2g is complete."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = setuptools["packages"]["find"]["include"]
    packages = [name for name, path in SOURCES.items() if path.name == "__init__.py"]
    missing = [name for name in packages if not any(fnmatch.fnmatchcase(name, pattern) for pattern in include)]
    assert not missing, f"add {missing} to [tool.setuptools.packages.find] include in pyproject.toml"


def test_docs_show_the_layer_table_the_tests_check():
    docs = (REPO_ROOT / "docs" / "architecture.md").read_text()
    assert layer_table() in docs, f"update the table in docs/architecture.md to:\n{layer_table()}"


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_reports_the_cycle_path():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def test_the_layer_rules_allow_no_cycle_between_packages():
    """The packages with rules (all but the ``any`` ones) form layers: none may import,
    through the others, a package that may import it."""
    graph = {package: set(allowed) for package, (allowed, _) in LAYERS.items() if allowed is not ANY}
    cycle = _find_cycle(graph)
    assert cycle is None, "LAYERS allows a cycle: " + " -> ".join(f"g2g.{p}" for p in cycle)


def test_no_import_cycle_between_g2g_modules():
    graph = {name: {i.target for i in IMPORTS[name] if i.target in SOURCES and i.target != name}
             for name in SOURCES}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle (counting imports inside functions): " + " -> ".join(cycle)


@pytest.mark.parametrize("package", [p for p, (allowed, _) in LAYERS.items() if allowed is not ANY])
def test_package_imports_only_the_g2g_packages_below_it(package):
    allowed = LAYERS[package][0] | {package}
    wrong = [i for m in _modules_of(package) for i in IMPORTS[m]
             if _is_g2g(i.target) and i.target not in SHARED_HELPERS and _package(i.target) not in allowed]
    others = ", ".join(f"g2g.{p}" for p in LAYERS if p in LAYERS[package][0])
    rule = f"may import only {others}" if others else "may import no other g2g package"
    assert not wrong, f"g2g.{package} {rule}:\n  {_lines(wrong)}"


@pytest.mark.parametrize("package", [p for p, (_, libraries) in LAYERS.items() if libraries])
def test_package_never_imports_its_forbidden_libraries(package):
    libraries = LAYERS[package][1]
    wrong = [i for m in _modules_of(package) for i in IMPORTS[m] if _library(i.target) in libraries]
    assert not wrong, f"g2g.{package} must not import {', '.join(libraries)}:\n  {_lines(wrong)}"


def test_only_the_config_users_import_hydra_or_omegaconf():
    def may(module: str) -> bool:
        return any(module == user or module.startswith(user + ".") for user in CONFIG_USERS)

    wrong = [i for m in SOURCES if not may(m) for i in IMPORTS[m] if _library(i.target) in CONFIG_LIBRARIES]
    assert not wrong, f"only {', '.join(CONFIG_USERS)} may import Hydra or OmegaConf:\n  {_lines(wrong)}"


def test_package_inits_import_only_the_lazy_helper():
    """Importing a package runs nothing heavy: its names are imported on first use."""
    wrong = [i for name in LAZY for i in IMPORTS[name] if i.target not in SHARED_HELPERS]
    assert not wrong, f"a package __init__ imports only g2g._lazy:\n  {_lines(wrong)}"


# --- the same at run time -----------------------------------------------------------

def _loaded_after_import(modules: list[str], libraries: tuple[str, ...]) -> list[str]:
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(l for l in {libraries!r} if l in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, check=True)
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


# every package below g2g with lazy re-exports, nested ones (g2g.sparse.dst) included
LAZY_PACKAGES = sorted(name for name in LAZY if name != "g2g")


def test_importing_a_package_imports_no_heavy_library():
    assert set(LAZY_PACKAGES) >= {f"g2g.{p}" for p in LAYERS} | {"g2g.sparse.dst"}
    assert _loaded_after_import(LAZY_PACKAGES, TORCH + CONFIG_TRACKING_PLOTTING) == []


def test_importing_the_tracking_modules_does_not_import_torch():
    assert _loaded_after_import(_importable(_modules_of("tracking")), TORCH) == []


def test_importing_the_config_modules_does_not_import_torch():
    assert _loaded_after_import(_importable(_modules_of("config")), TORCH) == []


@pytest.mark.integration
def test_importing_the_model_code_does_not_import_hydra_mlflow_or_matplotlib():
    modules = [m for p in ("snn", "sparse", "models", "data", "training") for m in _modules_of(p)]
    assert _loaded_after_import(_importable(modules), CONFIG_TRACKING_PLOTTING) == []


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__ and set(module.__all__) <= set(dir(module))
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ lists names its modules do not define: {missing}"


MAX_POSITIONAL_ARGUMENTS = 6


def test_no_function_takes_more_than_six_positional_arguments():
    """Long positional argument lists hide which value is which; the rest are keyword-only
    (``self``/``cls``/``ctx`` not counted)."""
    offenders = []
    for name, path in SOURCES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                positional = [a.arg for a in node.args.posonlyargs + node.args.args]
                if positional and positional[0] in ("self", "cls", "ctx"):
                    positional = positional[1:]
                if len(positional) > MAX_POSITIONAL_ARGUMENTS:
                    offenders.append(f"{name}.{node.name} (line {node.lineno}): {len(positional)}")
    assert not offenders, "more than 6 positional arguments (make the rest keyword-only): " + "; ".join(offenders)


def test_the_code_passes_the_linter_configured_in_pyproject():
    """ruff with the rules of pyproject.toml ([tool.ruff]) over the whole repository."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO_ROOT)],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
