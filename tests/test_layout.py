"""The layout is the architecture: codec, lm and flow never import each other or tts."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMPONENTS = ("codec", "lm", "flow")


def imported_top_level_packages(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("component", COMPONENTS)
def test_components_stay_independent(component):
    forbidden = (set(COMPONENTS) | {"tts", "recipes", "demo"}) - {component}
    for path in sorted((ROOT / component).rglob("*.py")):
        assert not imported_top_level_packages(path) & forbidden, f"{path.relative_to(ROOT)} imports {forbidden}"


def test_torchaudio_is_never_imported():
    for path in sorted(ROOT.rglob("*.py")):
        if ".venv" not in path.parts:
            assert "torchaudio" not in imported_top_level_packages(path), path
