"""No import cycles inside the sarclip_search package (its four folders: sarclip_search/, index/,
training/, cli/).

The graph has an edge a -> b when module a imports module b at module level: any import statement
outside a function body, including those under `if TYPE_CHECKING:` (a type-only import is still a
dependency: index/tuning.py and index/vector_index.py once imported each other that way). Imports inside
functions are left out: they run late, on purpose (the CLI loads training code only for its commands).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {  # setuptools package-dir (pyproject.toml)
    "sarclip_search": ROOT / "sarclip_search",
    "sarclip_search.index": ROOT / "index",
    "sarclip_search.training": ROOT / "training",
    "sarclip_search.cli": ROOT / "cli",
}


def package_modules(dirs: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file below the package folders."""
    found = {}
    for package, directory in dirs.items():
        for path in sorted(directory.rglob("*.py")):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _module_level_imports(tree: ast.Module):
    """Import nodes that run when the module is imported (not inside a function body)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of `modules` it imports at module level."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _module_level_imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import mod` imports the submodule pkg.mod
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else source)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_in_the_package():
    graph = import_graph(package_modules(PACKAGE_DIRS))
    assert cycles(graph) == [], "modules that import each other (directly or through others)"


def test_the_graph_sees_the_package_imports():
    graph = import_graph(package_modules(PACKAGE_DIRS))
    index = "sarclip_search.index"
    assert {f"{index}.filtered", f"{index}.cost"} <= graph[f"{index}.tuning"]  # relative imports
    assert f"{index}.tuning" in graph[f"{index}.vector_index"]
    assert index in graph["sarclip_search.query.engine"]  # from sarclip_search.index import VectorIndex
    assert f"{index}.errors" in graph["sarclip_search.query.engine"]  # from sarclip_search.index.errors import ...


def test_cycles_are_found_through_type_checking_and_from_imports(tmp_path: Path):
    package = tmp_path / "pkg"
    package.mkdir()
    files = {
        "__init__.py": "from .a import A\n",
        "a.py": "from . import b\nA = 1\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import C\n",
        "c.py": "import pkg.a\nC = 1\n",
        "d.py": "def late():\n    from . import e\n",
        "e.py": "from .d import late\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package_modules({"pkg": package}))
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.d"] == set()  # the import inside late() runs late
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
