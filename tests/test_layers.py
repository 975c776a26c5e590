"""Imports point one way: every module of wsss and flows belongs to a layer, and no module
imports one of a higher layer (imports inside functions and TYPE_CHECKING blocks included).
The order is the README's (Development)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module may import its own layer and the ones before it
LAYERS = [
    ["wsss", "wsss.config", "wsss.files", "wsss.layout", "wsss.lifetime"],  # foundations: settings, files, run layout, process lifetime
    ["wsss.data", "wsss.viz"],
    ["wsss.models"],
    ["wsss.attention"],
    ["wsss.refine"],
    ["wsss.predict"],
    ["wsss.writers"],
    ["wsss.eval"],
    ["wsss.train"],
    ["wsss.report"],
    ["wsss.steps"],
    ["flows"],
    ["wsss.cli"],
]
# entry points that only forward to a higher layer's command line
ALIASES = {"wsss.__main__": "wsss.cli"}


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name (its longest listed prefix), or None if not ours."""
    best, depth = None, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = index, name.count(".")
    return best


def modules() -> dict[str, Path]:
    found = {}
    for package in ("wsss", "flows"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, nested ones included."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.lineno, node.module))
            names += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return names


def test_every_module_has_a_layer():
    assert not [name for name in modules() if layer_of(name) is None]


def test_imports_point_down_the_layers():
    upward = []
    for name, path in modules().items():
        own = layer_of(name)
        for line, target in imported(path):
            layer = layer_of(target)
            if layer is None or layer <= own or ALIASES.get(name) == target.rsplit(".", 1)[0] or ALIASES.get(name) == target:
                continue
            upward.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[own][0]}) imports {target} ({LAYERS[layer][0]})")
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_the_check_finds_an_upward_import(tmp_path):
    """The check is not vacuous: a data module importing the report layer is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from wsss.report.build import build_report\n")
    found = [(line, target) for line, target in imported(bad) if layer_of(target) > layer_of("wsss.data.bad")]
    assert found == [(2, "wsss.report.build"), (2, "wsss.report.build.build_report")]
