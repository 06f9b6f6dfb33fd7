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
