"""The rules of the package layout, read from the source: who may touch the tables and write
statuses, who may import a provider module, no import circles, stages in folders."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "batcher"
STORE_ONLY_NAMES = {"TABLES", "set_status", "set_status_many"}
PROVIDER_MODULES = {
    f"batcher.providers.{name}"
    for name in ("openai", "anthropic", "google", "xai", "deepseek", "direct")
}
SQL_WRITES = ("UPDATE ", "INSERT ", "DELETE ", "COPY ")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(tree: ast.AST, name: str, *, top_level_only: bool) -> set[str]:
    """Modules (and module.name pairs) imported by the module `name`."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _parsed(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def _outside(*folders: str) -> list[str]:
    return [n for n in MODULES if not any(n == f or n.startswith(f + ".") for f in folders)]


def test_only_the_store_touches_tables_and_writes_statuses():
    offenders = []
    for name in _outside("batcher.store"):
        tree = _parsed(name)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                named = {alias.name for alias in node.names} & STORE_ONLY_NAMES
                if named or node.module == "batcher.store.models":
                    offenders.append(f"{name}: imports {node.module} ({', '.join(named)})")
            if isinstance(node, ast.Name) and node.id in STORE_ONLY_NAMES:
                offenders.append(f"{name}:{node.lineno}: uses {node.id}")
    assert offenders == [], "status writes and table access belong in batcher/store/"


def test_only_the_store_and_the_sandbox_write_sql():
    offenders = []
    for name in _outside("batcher.store", "batcher.sandbox"):
        for node in ast.walk(_parsed(name)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.lstrip().startswith(SQL_WRITES):  # the project writes SQL in capitals
                    offenders.append(f"{name}:{node.lineno}: {node.value[:40]!r}")
            if isinstance(node, ast.Attribute) and node.attr in ("update", "insert", "delete"):
                if isinstance(node.value, ast.Name) and node.value.id == "sa":
                    offenders.append(f"{name}:{node.lineno}: sa.{node.attr}")
    assert offenders == []


def test_nothing_outside_providers_imports_a_provider_module():
    offenders = [
        f"{name} imports {module}"
        for name in _outside("batcher.providers")
        for module in _imports(_parsed(name), name, top_level_only=False) & PROVIDER_MODULES
    ]
    assert offenders == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle():
    graph = {
        name: {m for m in _imports(_parsed(name), name, top_level_only=False) if m in MODULES}
        - {name}
        for name in MODULES
    }
    # a package's __init__ is imported with any of its modules: not a circle of ours
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    assert _cycle(graph) is None


def test_stages_live_in_folders_that_say_what_they_own():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 8, top
    for package in sorted(p.parent for p in PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 6, f"{package.name}/__init__.py says what it owns"


@pytest.mark.parametrize("table", ["runs", "items", "attempts", "batches", "prompts", "firings"])
def test_each_entity_has_its_store_module(table):
    assert f"batcher.store.{table}" in MODULES
