"""The package's layers, read from the source (every import: top-level, inside functions and
under TYPE_CHECKING): no module imports from a layer above its own, `plan/` imports nothing but
`plan/` and `errors`, and there is no import cycle between the packages."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyservecli"

# Lowest first. A module may import from its own layer and those below it. Node-side workers
# (run on the nodes as `python -m`) sit with bench: they may use plan, run and bench, never
# api or the CLI.
LAYERS = {
    "__init__": 0, "errors": 0,
    "models": 1,  # the built-in model configs: data
    "plan": 2,  # pure: what to run, no process, no network, no file written
    "run": 3,  # processes: launch, fleet, containers, status
    "bench": 4, "workers": 4,  # measurement, and the node-side entry points
    "api": 5,
    "cli": 6, "__main__": 7,
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported pyservecli module, line) for every import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "pyservecli":
                    # `from pyservecli import api` names a module; `__version__` the package.
                    targets = [f"pyservecli.{a.name}" if (PACKAGE / f"{a.name}.py").exists() or
                               (PACKAGE / a.name).is_dir() else "pyservecli" for a in node.names]
                elif node.module.startswith("pyservecli."):
                    targets = [node.module]
                else:
                    targets = []
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("pyservecli")]
            else:
                continue
            found += [(module, target, node.lineno) for target in targets]
    return found


def test_every_package_of_pyservecli_has_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
                if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert packages == set(LAYERS), "give a new package its layer here"


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [f"{module}:{line} imports {target}" for module, target, line in imports()
              if LAYERS[layer_of(target)] > LAYERS[layer_of(module)]]
    assert upward == []


def test_plan_is_pure_it_imports_only_plan_and_errors():
    outside = [f"{module}:{line} imports {target}" for module, target, line in imports()
               if layer_of(module) == "plan" and layer_of(target) not in ("plan", "errors")]
    assert outside == []
    # ...and no process, network or thread module of the standard library either.
    impure = {"subprocess", "socket", "requests", "threading", "multiprocessing", "urllib"}
    found = []
    for path in (PACKAGE / "plan").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in impure]
    assert found == []


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for module, target, _ in imports():
        source, dest = layer_of(module), layer_of(target)
        if source != dest:
            graph.setdefault(source, set()).add(dest)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert [p for p in graph if reaches(p, p, {p})] == []


def test_the_cli_reaches_processes_and_plans_only_through_the_api():
    """#25: `cli/` calls `api` for everything that runs, plans or reads records; the launch
    declarations (plan.spec, from which the options are built, as vLLM's EngineArgs feed its
    parser) and bench's presentation (tables, plots, the store's queries) are the exceptions."""
    allowed = {"pyservecli", "pyservecli.api", "pyservecli.errors", "pyservecli.plan.spec"}
    reach = [f"{module}:{line} imports {target}" for module, target, line in imports()
             if layer_of(module) == "cli" and layer_of(target) not in ("cli", "bench")
             and target not in allowed]
    assert reach == []
