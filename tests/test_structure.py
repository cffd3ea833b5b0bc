"""The house rules of the package, checked from its source: no import circle,
the UI imports no torch, nothing outside the UI imports Textual or rich, and
no module grows past one sitting."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "tui_trainer"
MAX_LINES = 450


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(PKG.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(package modules imported, top-level outside packages imported), lazy imports included."""
    inside, outside = set(), set()
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                for cand in [mod] + [f"{mod}.{a.name}" for a in node.names]:
                    if cand in known and cand != name:
                        inside.add(cand)
            elif node.module:
                outside.add(node.module.split(".")[0])
                if node.module.startswith("tui_trainer") and node.module in known:
                    inside.add(node.module)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known:
                    inside.add(a.name)
                outside.add(a.name.split(".")[0])
    return inside, outside


def test_no_import_circle():
    known = modules()
    graph = {m: imports(m, p, known)[0] for m, p in known.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            assert state.get(n) != 1, "import circle: " + " -> ".join(path + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_ui_imports_no_torch_and_only_ui_imports_textual():
    known = modules()
    for m, p in known.items():
        _, outside = imports(m, p, known)
        if m.startswith("tui_trainer.ui"):
            assert "torch" not in outside, f"{m} imports torch"
        else:
            assert not outside & {"textual", "rich"}, f"{m} imports {outside & {'textual', 'rich'}}"


def test_modules_fit_one_sitting():
    big = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
