"""The project's modules import downward only: no cycle anywhere, each layer (nexa_core, the SDK,
resources, nexa_ui, nexa_assets) only from itself and the layers below, inside nexa_core each floor (the shared
modules, data, teacher, distill, models, train, evaluate, release) only from itself and the floors below, and
nexa_core never imports Dagster (only the remote entry points may use dagster_pipes). Read from the source with
`ast`, so an import hidden inside a function, the usual way to dodge a cycle, counts like any other."""

import ast
from pathlib import Path

from conftest import PROJECT

PACKAGE = "nexa_core"
LAYERS = ("nexa_core", "nexa_forge", "resources", "nexa_ui", "nexa_assets")  # each may import those before it
# nexa_core's floors, lowest first: a module (or every module of a package) may import its own floor and those below
FLOORS = (
    (  # the shared pieces: ids, files, settings, the recipe, the schemas and tables, the launched-stage runtime
        "nexa_core",
        "nexa_core.ids",
        "nexa_core.files",
        "nexa_core.roles",
        "nexa_core.settings",
        "nexa_core.artifacts",
        "nexa_core.metric_registry",
        "nexa_core.schemas",
        "nexa_core.delta",
        "nexa_core.tables",
        "nexa_core.recipe",
        "nexa_core.stage",
    ),
    ("nexa_core.data",),
    ("nexa_core.teacher",),
    ("nexa_core.distill",),
    ("nexa_core.models",),  # loading a base, a checkpoint, a role: what training and evaluation both need
    ("nexa_core.train",),
    ("nexa_core.evaluate",),
    ("nexa_core.release", "nexa_core.sweep"),
)


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under root/package."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports(path: Path, module: str, is_package: bool) -> list[tuple[str, str | None]]:
    """(module, name or None) for every import anywhere in the file (functions, classes and
    if-blocks included), relative imports resolved: `import a.b` is ("a.b", None), `from a import b`
    is ("a", "b")."""
    found = []
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            found += [(base, alias.name) for alias in node.names]
    return found


def import_graph(root: Path, *packages: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the packages' modules it imports, module -> every module it names). `from a
    import b` imports the submodule a.b where there is one, else a itself."""
    modules = {module: path for package in packages for module, path in module_files(root, package).items()}
    graph, named = {}, {}
    for module, path in modules.items():
        found = imports(path, module, path.name == "__init__.py")
        named[module] = {base for base, _ in found}
        targets = {f"{base}.{name}" if f"{base}.{name}" in modules else base for base, name in found if name} | {
            base for base, name in found if not name
        }
        graph[module] = (targets & modules.keys()) - {module}
    return graph, named


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state, stack = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_nexa_core_imports_have_no_cycle():
    graph, _ = import_graph(PROJECT, PACKAGE)
    assert "nexa_core.teacher.collect" in graph and "nexa_core.teacher.calls" in graph["nexa_core.teacher.collect"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in nexa_core: " + " -> ".join(cycle)


def test_the_project_imports_have_no_cycle_and_go_down_the_layers():
    graph, _ = import_graph(PROJECT, *LAYERS)
    assert "resources.instance" in graph and "resources.environment" in graph["resources.instance"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    layer = {module: LAYERS.index(module.split(".")[0]) for module in graph}
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if layer[t] > layer[m])
    assert not upward, f"imports up the layers {' < '.join(LAYERS)}: {upward}"


def floor_of(module: str, floors) -> int | None:
    """The floor a module stands on: the one that names it or, failing that, the package nearest above it (the
    package nexa_core itself is on the lowest floor, its stage packages are not); None where none does."""
    named = [(len(name), i) for i, floor in enumerate(floors) for name in floor if f"{module}.".startswith(f"{name}.")]
    return max(named)[1] if named else None


def upward_imports(graph: dict[str, set[str]], floors) -> list[str]:
    """Every import from a floor to a higher one, as "module -> module"."""
    floor = {module: floor_of(module, floors) for module in graph}
    return sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if floor[t] > floor[m])


def test_nexa_core_imports_go_down_its_floors():
    graph, _ = import_graph(PROJECT, PACKAGE)
    assert "nexa_core.models.load" in graph["nexa_core.train.kd"]  # the graph sees function-level imports
    unplaced = sorted(module for module in graph if floor_of(module, FLOORS) is None)
    assert not unplaced, f"modules on no floor of nexa_core (add them to FLOORS where they belong): {unplaced}"
    upward = upward_imports(graph, FLOORS)
    floors = " < ".join("/".join(name.removeprefix("nexa_core.") for name in floor) for floor in FLOORS)
    assert not upward, f"imports up nexa_core's floors ({floors}): {upward}"


def test_nexa_core_imports_no_dagster_but_pipes():
    _, named = import_graph(PROJECT, PACKAGE)
    found = {
        module: sorted(
            {
                top
                for top in (n.split(".")[0] for n in names)
                if (top == "dagster" or top.startswith("dagster_")) and top != "dagster_pipes"
            }
        )
        for module, names in named.items()
    }
    found = {module: tops for module, tops in found.items() if tops}
    assert not found, f"nexa_core is plain Python: no Dagster import but dagster_pipes, found {found}"


def write_tree(root: Path, files: dict[str, str]) -> None:
    """Each file (a path under root) with its text, its folders made."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.sub import b\n",
            "pkg/sub/__init__.py": "from pkg.sub.b import thing\n",
            "pkg/sub/b.py": "import json\n\ndef thing():\n    from ..a import x\n    return x\n",
        },
    )
    graph, _ = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    write_tree(tmp_path, {"pkg/sub/b.py": "def thing():\n    return 1\n"})
    assert find_cycle(import_graph(tmp_path, "pkg")[0]) is None


def test_an_import_up_a_floor_inside_a_function_is_found(tmp_path):
    write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/high.py": "from pkg.low.tool import helper\n",
            "pkg/low/__init__.py": "",
            "pkg/low/tool.py": "def helper():\n    return 1\n",
        },
    )
    floors = (("pkg",), ("pkg.low",), ("pkg.high",))  # the root package's floor does not hold its subpackages
    assert upward_imports(import_graph(tmp_path, "pkg")[0], floors) == []
    write_tree(tmp_path, {"pkg/low/tool.py": "def helper():\n    from ..high import thing\n    return thing\n"})
    assert upward_imports(import_graph(tmp_path, "pkg")[0], floors) == ["pkg.low.tool -> pkg.high"]
    assert floor_of("pkg.low.tool", floors) == 1 and floor_of("other", floors) is None
