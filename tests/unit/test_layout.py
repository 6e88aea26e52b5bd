"""The rules the package layout keeps (CONTRIBUTING.md, docs/architecture.md), read from
the source: LMDB stays inside its backend, the legacy layout is a strategy rather than
a mode string compared everywhere, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mpqueue"
LMDB_BACKEND = "mpqueue.store.lmdb"


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = (path, ast.parse(path.read_text(), str(path)))
    return found


MODULES = _modules()


def _imports(name: str, tree: ast.Module, top_level_only: bool) -> set[str]:
    """Modules ``name`` imports (``from x import y`` counts y when y is a module)."""
    is_package = MODULES[name][0].name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    nodes = _top_level(tree) if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
    return out


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements run on import, ``if TYPE_CHECKING:`` blocks included."""
    out: list[ast.stmt] = []
    for node in tree.body:
        out.append(node)
        if isinstance(node, ast.If):
            out.extend(node.body)
    return out


def test_only_the_lmdb_backend_imports_lmdb_or_its_modules() -> None:
    offenders = []
    for name, (_, tree) in MODULES.items():
        if name == LMDB_BACKEND or name.startswith(LMDB_BACKEND + "."):
            continue
        for target in _imports(name, tree, top_level_only=False):
            inside = target.startswith(LMDB_BACKEND + ".")
            # open_store may reach the backend's one entry point, the package itself
            if target == "lmdb" or inside:
                offenders.append(f"{name} imports {target}")
    assert offenders == []


def test_no_module_compares_a_mode_with_legacy_outside_the_lmdb_backend() -> None:
    offenders = []
    for name, (_, tree) in MODULES.items():
        if name.startswith(LMDB_BACKEND):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Constant) and o.value == "legacy" for o in operands):
                    offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_no_import_cycle() -> None:
    graph = {
        name: {t for t in _imports(name, tree, top_level_only=True) if t in MODULES and t != name}
        for name, (_, tree) in MODULES.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_rules_see_the_package() -> None:
    """The checks above read real modules: a control that they are not vacuous."""
    assert "mpqueue.store.lmdb.store" in MODULES and "mpqueue.serve.coordinator" in MODULES
    lmdb_store = MODULES["mpqueue.store.lmdb.store"][1]
    assert "lmdb" in _imports("mpqueue.store.lmdb.env", MODULES["mpqueue.store.lmdb.env"][1], True)
    assert "mpqueue.store.lmdb.keys" in _imports("mpqueue.store.lmdb.store", lmdb_store, True)
