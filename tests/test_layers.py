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


# --- what the glue may not grow back ------------------------------------------------------------
MAX_PARAMETERS = 8  # more travels as one object (LabelJob, RunControl, SegmenterRecipe, RunResults, ...)
LEAF_MODELS = ("wsss/models/heads/",)  # network modules whose constructors mirror their papers' hyperparameters


def test_no_signature_over_eight_parameters():
    found = []
    for name, path in modules().items():
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(LEAF_MODELS):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                count = len([n for n in names if n not in ("self", "cls")])
                if count > MAX_PARAMETERS:
                    found.append(f"{relative}:{node.lineno} {node.name}: {count} parameters")
    assert not found, "group what travels together:\n" + "\n".join(found)


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, whitespace-folded text) of the lines that carry code: no blank, comment,
    docstring-only, import or lone-bracket lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skip.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            skip.update(range(node.lineno, node.end_lineno + 1))  # docstrings
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        folded = " ".join(text.split())
        if number in skip or not folded or folded.startswith("#") or folded in {")", "]", "}", "):", "),", "],", "},"}:
            continue
        lines.append((number, folded))
    return lines


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def duplicated_blocks(paths: list[Path], size: int = 6) -> list[str]:
    """Places where ``size`` consecutive code lines stand again, the same to the letter."""
    seen: dict[tuple[str, ...], tuple[Path, int]] = {}
    found = []
    for path in paths:
        lines = _code_lines(path)
        last_reported = -size
        for i in range(len(lines) - size + 1):
            block = tuple(text for _, text in lines[i:i + size])
            where = (path, lines[i][0])
            if block in seen and seen[block] != where and i >= last_reported + size:
                other, line = seen[block]
                found.append(f"{_shown(path)}:{lines[i][0]} repeats {_shown(other)}:{line}")
                last_reported = i
            seen.setdefault(block, where)
    return found


def test_no_block_of_six_lines_twice():
    found = duplicated_blocks(list(modules().values()))
    assert not found, "one implementation, called twice:\n" + "\n".join(found)


def test_the_duplicate_check_finds_a_copy(tmp_path):
    body = "".join(f"    x{i} = compute({i}, value)\n" for i in range(6))
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(f"def f(value):\n{body}    return x0\n")
    assert duplicated_blocks([tmp_path / "a.py", tmp_path / "b.py"]) == ["b.py:1 repeats a.py:1"]
    (tmp_path / "b.py").write_text("def f(value):\n" + body.replace("x3 =", "y3 =") + "    return x0\n")
    assert duplicated_blocks([tmp_path / "a.py", tmp_path / "b.py"]) == []  # one line differs: no run of six
