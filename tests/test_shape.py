"""The shape of the code: the layers of docs/ARCHITECTURE.md, kept by reading the source.

Every ``.py`` file of the project's own packages (``zoho``, ``sync``, ``sandbox``,
``blocks``, ``tasks``, ``flows``, ``deployments``, sub-packages included) is parsed
with :mod:`ast`; nothing is imported. Each failure names the file, the line and the
rule it breaks. The rules:

* **cycle**: no import cycle among the project's modules. Imports inside functions
  count as much as module-level ones: a lazy import hides a cycle from the
  interpreter, not from the reader, who still cannot understand one module without
  the other. Imports under ``if TYPE_CHECKING:`` do not count here (they never run
  and exist for annotations only). Importing ``a.b`` is an edge to ``a.b`` only,
  not to the package ``a`` (whose ``__init__`` Python also runs): a package that
  re-exports its modules would otherwise be in a cycle with each of them.
* **private**: no ``from a.b import _c`` of a project module (``_c`` a name or a
  module; dunder names excepted); make the name public in its home instead.
* **sql-in-flows**: flows tell the story of a run; SQL lives in ``sync/`` (or a
  task). In ``flows/`` no import of ``sqlalchemy`` or ``sqlmodel`` and no call of
  ``select(``, ``text(``, ``Session(``, ``.execute(`` or ``.exec(`` (sqlmodel's).
* **long-flow-function**: no function in ``flows/`` longer than 50 lines
  (``def`` line to last line; decorators not counted).
* **layers**: imports point down: ``zoho``, ``sync`` < ``blocks`` < ``tasks`` <
  ``flows`` < ``deployments`` (skipping layers down is fine). ``zoho`` and ``sync``
  know nothing of each other and import no ``prefect``; ``sandbox`` imports nothing
  of ours (it is written from Zoho's documents, so it cannot share a bug with our
  client). These count everywhere, ``TYPE_CHECKING`` included.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoho", "sync", "sandbox", "blocks", "tasks", "flows", "deployments")
#: Bottom-up; equal ranks may not import each other (see ``SEPARATE``).
LAYER = {"zoho": 0, "sync": 0, "blocks": 1, "tasks": 2, "flows": 3, "deployments": 4}
SEPARATE = {("zoho", "sync"), ("sync", "zoho")}
NO_PREFECT = ("zoho", "sync")
SQL_MODULES = ("sqlalchemy", "sqlmodel")
SQL_NAMES = {"select", "text", "Session"}
SQL_METHODS = {"execute", "exec", "select", "text", "Session"}
MAX_FLOW_FUNCTION_LINES = 50


@dataclass(frozen=True)
class Import:
    """One imported module (or ``from`` name) as written at ``path:line``."""

    module: str  # the importing module, e.g. ``deployments.stack``
    path: str  # its file, relative to the checkout
    line: int
    target: str  # the absolute module imported (``from a import b``: ``a.b`` if that is a module, else ``a``)
    names: tuple[str, ...]  # the names of a ``from`` import
    in_function: bool
    type_checking: bool

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    """Module name -> file, for every module of the project's packages."""
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            files[module_name(path)] = path
    return files


MODULES = source_files()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in MODULES.items()}


def top(module: str) -> str:
    return module.split(".")[0]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool = False, type_checking: bool = False):
    """``(node, in_function, type_checking)`` for every node under ``node``."""
    for child in ast.iter_child_nodes(node):
        yield child, in_function, type_checking
        nested_function = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, in_function, True
                yield from _walk(stmt, in_function, True)
            for stmt in child.orelse:
                yield stmt, in_function, type_checking
                yield from _walk(stmt, in_function, type_checking)
        else:
            yield from _walk(child, nested_function, type_checking)


def _base(module: str, level: int, written: str | None) -> str:
    """The absolute module of a (possibly relative) ``from`` import in ``module``."""
    if not level:
        return written or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (level - 1)]
    return ".".join(package + ([written] if written else []))


def imports_of(module: str) -> list[Import]:
    """Every import in ``module``, third-party ones included (``target`` is then not in ``MODULES``)."""
    path = rel(MODULES[module])
    found = []
    for node, in_function, type_checking in _walk(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, path, node.lineno, alias.name, (), in_function, type_checking))
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node.level, node.module)
            names = tuple(a.name for a in node.names)
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            if len(submodules) < len(names):
                found.append(Import(module, path, node.lineno, base, names, in_function, type_checking))
            found.extend(Import(module, path, node.lineno, sub, (sub.rpartition(".")[2],), in_function, type_checking) for sub in submodules)
    return found


IMPORTS = [imp for module in MODULES for imp in imports_of(module)]


def project_target(imp: Import) -> str | None:
    """The project module ``imp`` names (the longest known prefix of ``target``), or None."""
    parts = imp.target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in MODULES:
            return name
    return None


def report(problems: list[str]) -> str:
    return f"{len(problems)} violation(s):\n" + "\n".join(sorted(set(problems)))


# ------------------------------------------------------------------------- cycles
def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """One cycle (as the imports that close it) per strongly connected group of modules."""
    edges: dict[str, dict[str, Import]] = defaultdict(dict)
    for imp in imports:
        target = project_target(imp)
        if target and not imp.type_checking:
            edges[imp.module].setdefault(target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges[v]:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:
        members, start = set(group), group[0]
        paths = {start: [start]}  # breadth-first from ``start`` back to it, inside the group
        queue, closing = [start], None
        while queue and closing is None:
            v = queue.pop(0)
            for w in sorted(edges[v]):
                if w == start:
                    closing = paths[v] + [start]
                    break
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        cycles.append([edges[a][b] for a, b in zip(closing, closing[1:])])
    return cycles


def test_no_import_cycles():
    problems = []
    for cycle in import_cycles(IMPORTS):
        loop = " -> ".join([cycle[0].module] + [project_target(imp) for imp in cycle])
        for imp in cycle:
            kind = "inside a function" if imp.in_function else "module level"
            problems.append(f"{imp.where}: cycle: {imp.module} imports {project_target(imp)} ({kind}); cycle {loop}")
    assert not problems, report(problems)


# ------------------------------------------------------------------- private names
def test_no_private_names_imported_from_another_module():
    problems = [
        f"{imp.where}: private: {imp.module} imports {name} from {project_target(imp)}"
        for imp in IMPORTS
        if project_target(imp) and project_target(imp) != imp.module
        for name in imp.names
        if name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
    ]
    assert not problems, report(problems)


# -------------------------------------------------------------------------- flows
FLOWS = [m for m in MODULES if top(m) == "flows"]


def test_no_sql_in_flows():
    problems = [
        f"{imp.where}: sql-in-flows: {imp.module} imports {imp.target}"
        for imp in IMPORTS
        if top(imp.module) == "flows" and top(imp.target) in SQL_MODULES
    ]
    for module in FLOWS:
        for node, _, _ in _walk(TREES[module]):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in SQL_NAMES:
                problems.append(f"{rel(MODULES[module])}:{node.lineno}: sql-in-flows: call of {func.id}(")
            elif isinstance(func, ast.Attribute) and func.attr in SQL_METHODS:
                problems.append(f"{rel(MODULES[module])}:{node.lineno}: sql-in-flows: call of .{func.attr}(")
    assert not problems, report(problems)


def test_flow_functions_are_short():
    problems = []
    for module in FLOWS:
        for node, _, _ in _walk(TREES[module]):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FLOW_FUNCTION_LINES:
                    problems.append(f"{rel(MODULES[module])}:{node.lineno}: long-flow-function: {node.name} has {length} lines (at most {MAX_FLOW_FUNCTION_LINES})")
    assert not problems, report(problems)


# ------------------------------------------------------------------------- layers
def layer_problem(imp: Import) -> str | None:
    """Why ``imp`` breaks the layers, or None."""
    source, target = top(imp.module), top(imp.target)
    if source in NO_PREFECT and target == "prefect":
        return f"{source}/ imports no prefect"
    if project_target(imp) is None or source == target:
        return None
    if source == "sandbox":
        return "sandbox/ imports nothing of ours"
    if (source, target) in SEPARATE:
        return f"{source}/ does not import {target}/"
    if source in LAYER and target in LAYER and LAYER[target] > LAYER[source]:
        return f"{source}/ may not import {target}/ (up the layers zoho, sync < blocks < tasks < flows < deployments)"
    return None


def test_imports_point_down_the_layers():
    problems = [
        f"{imp.where}: layers: {imp.module} imports {imp.target}: {why}"
        for imp in IMPORTS
        if (why := layer_problem(imp))
    ]
    assert not problems, report(problems)


# ----------------------------------------------------------- the checker itself
@pytest.mark.parametrize(
    ("module", "level", "written", "expected"),
    [
        ("deployments.stack", 1, "processes", "deployments.processes"),
        ("deployments.stack", 1, None, "deployments"),
        ("sync", 1, "store", "sync.store"),
        ("sync.store", 0, "sqlalchemy", "sqlalchemy"),
    ],
)
def test_relative_imports_resolve(module, level, written, expected):
    assert _base(module, level, written) == expected


def test_a_cycle_through_a_lazy_import_is_found():
    def imp(module: str, target: str, in_function: bool = False, type_checking: bool = False) -> Import:
        return Import(module, module.replace(".", "/") + ".py", 1, target, (), in_function, type_checking)

    cycle = [imp("sync.store", "sync.links", in_function=True), imp("sync.links", "sync.store"), imp("sync.engine", "sync.store")]
    assert [[(i.module, i.target) for i in c] for c in import_cycles(cycle)] == [[("sync.links", "sync.store"), ("sync.store", "sync.links")]]
    assert import_cycles([imp("sync.store", "sync.links", type_checking=True), imp("sync.links", "sync.store")]) == []


def test_every_package_is_read():
    assert {top(m) for m in MODULES} == set(PACKAGES)
    assert "flows.notifications" in MODULES and "deployments" in MODULES
