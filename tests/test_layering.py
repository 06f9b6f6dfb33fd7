"""Dependencies point one way: worldvae <- envs <- agents, the command line (agents.cli) on top.

``worldvae/__main__.py`` is the one exception: ``python -m worldvae`` is a door to the top floor.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "worldvae": {"envs", "agents", "gymnasium", "stable_baselines3", "ale_py", "minigrid"},
    "envs": {"agents"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    offenders = {}
    for path in (ROOT / package).rglob("*.py"):
        if path == ROOT / "worldvae" / "__main__.py":
            continue
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"imports against the layering: {offenders}"


def test_readme_layout_names_every_module():
    """The README's layout table lists every module of the three packages and the CLI."""
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") :]
    layout = layout[: layout.index("\n## ")] if "\n## " in layout else layout
    missing = [
        str(path.relative_to(ROOT))
        for package in ("worldvae", "envs", "agents")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.stem not in ("__init__", "__main__") and f"`{path.stem}" not in layout
    ]
    assert not missing, f"modules missing from the README's layout table: {missing}"


def _module_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (function-level imports included)."""
    modules = {}
    for package in ("worldvae", "envs", "agents"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    """No two modules import each other, directly or through others, even inside functions."""
    assert _cycles(_module_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
        for package in ("worldvae", "envs", "agents")
        for path in (ROOT / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


# Where the on-disk name of the env spec's options may appear: the spec itself, and the records
# that store it (a dataset's manifest, a latent dataset's source manifest, an agent's config).
ENV_OPTIONS_READERS = {
    "worldvae/envspec.py",
    "worldvae/data/manifest.py",
    "worldvae/data/writer.py",
    "agents/agent_config.py",
}


def test_env_options_dicts_stay_in_the_spec_and_its_records():
    users = sorted(
        str(path.relative_to(ROOT))
        for package in ("worldvae", "envs", "agents")
        for path in (ROOT / package).rglob("*.py")
        if "env_options" in path.read_text()
        and str(path.relative_to(ROOT)) not in ENV_OPTIONS_READERS
    )
    assert not users, f"env options handled as a dict outside the env spec: {users}"
