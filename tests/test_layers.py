"""Config flows down the layers: vgjax's import graph (module-level and lazy imports inside
functions alike; ``if TYPE_CHECKING:`` blocks excluded) has no cycle besides the two known
climbs listed here, each to be removed, so no new climb back up the layers comes in unseen;
and no module takes another's private (``_``) names."""

import ast
from pathlib import Path

import vgjax

PACKAGE = Path(vgjax.__file__).parent
# (importer, imported): the known climbs, and why they are still there.
KNOWN_CLIMBS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = ("vgjax",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def import_graph() -> dict[str, set[str]]:
    """Module -> the vgjax modules it imports (a package's own submodules excluded)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in paths:
                    t = t.rpartition(".")[0]
                # a package importing its own submodules is not a climb
                if t and t != name and t != "vgjax" and not t.startswith(name + "."):
                    deps.add(t)
        graph[name] = deps
    return graph


def _package(name: str) -> str:
    """The unit a climb is judged on: a subpackage counts as one module."""
    parts = name.split(".")
    return ".".join(parts[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones():
    g = import_graph()
    assert "vgjax.run.pipeline" in g["vgjax.cli.sweep"]  # lazy, inside cmd_sweep()
    assert "vgjax.config" not in g["vgjax.data"]  # only under TYPE_CHECKING
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_climb_back_up_the_layers_but_the_known_ones():
    g = import_graph()
    # judged per top-level module or subpackage, without the known climbs
    coarse: dict[str, set[str]] = {}
    for a, deps in g.items():
        for b in deps:
            pa, pb = _package(a), _package(b)
            if pa != pb and (a, pb) not in KNOWN_CLIMBS and (pa, pb) not in KNOWN_CLIMBS:
                coarse.setdefault(pa, set()).add(pb)
    assert cycles(coarse) == [], "an import climbs back up the layers"
    for a, b in KNOWN_CLIMBS:  # still there (none today): once one is gone, drop it
        assert b in {_package(x) for x in g[a]}, f"{a} no longer imports {b}"


# (importer, module.name): private names still used across modules, each to be removed.
KNOWN_PRIVATE: set[tuple[str, str]] = set()


def private_uses() -> set[tuple[str, str]]:
    """(module, ``vgjax.x._name``) for every ``_name`` a module takes from another vgjax module:
    ``from vgjax.x import _name`` or ``x._name`` on an imported vgjax module."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        name, tree = _module_name(path), ast.parse(path.read_text())
        modules = {}  # local name -> vgjax module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vgjax"):
                private = [p for p in node.module.split(".") if p.startswith("_")
                           and not p.startswith("__")]
                if private and not name.startswith(node.module.rsplit(".", 1)[0] + "."):
                    out.add((name, node.module))  # a private module, from outside its package
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        out.add((name, full))
                    modules[a.asname or a.name] = full
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("vgjax"):
                        modules[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                out.add((name, f"{modules[node.value.id]}.{node.attr}"))
    return out


def test_no_private_name_crosses_modules():
    assert sorted(private_uses() - KNOWN_PRIVATE) == []
