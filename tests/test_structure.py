"""The house rules of the package, checked from its source: no import circle,
the UI imports no torch, nothing outside the UI imports Textual or rich, the
training side never imports the UI, a few modules at the top and the rest in
rooms, one place that makes a ``Run``, and no module grows past one sitting."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "tui_trainer"
MAX_LINES = 400


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
                for cand in [node.module] + [f"{node.module}.{a.name}" for a in node.names]:
                    if cand.startswith("tui_trainer") and cand in known and cand != name:
                        inside.add(cand)
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


TOP_LEVEL_MAX = 12
ROOMS = {"train", "text", "run", "control", "logs", "curves", "runs", "ui", "loops", "cli"}


def test_a_few_modules_at_the_top_and_the_rest_in_rooms():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= TOP_LEVEL_MAX, f"{len(top)} modules directly under tui_trainer/: {top}"
    rooms = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    assert rooms == ROOMS, f"rooms changed: {sorted(rooms ^ ROOMS)} (update ROOMS and the README's design notes)"


def _graph():
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def _reaches(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in graph[m][0]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def test_the_training_side_never_reaches_the_ui():
    graph = _graph()
    for m in graph:
        if m.split(".")[1:2] and m.split(".")[1] in {"train", "run", "text", "control"}:
            ui = {n for n in _reaches(graph, m) if n.startswith("tui_trainer.ui")}
            assert not ui, f"{m} reaches the UI: {sorted(ui)}"


def test_steering_sits_below_the_run_and_the_loop():
    """``control/`` (commands, the channel, settings) is what a run, a loop and
    a client all speak: it reaches none of them (an attach client's helpers live
    in ``cli/remote.py``; the --time sink is added by the engine)."""
    graph = _graph()
    for m in graph:  # the package's own __init__ aside: every module is imported under it
        graph[m] = ({n for n in graph[m][0] if n != "tui_trainer"}, graph[m][1])
    for m in graph:
        if m.startswith("tui_trainer.control"):
            above = {n for n in _reaches(graph, m)
                     if n.split(".")[1:2] and n.split(".")[1] in {"run", "train", "loops", "cli", "ui", "text"}}
            assert not above, f"{m} reaches {sorted(above)}"


def test_what_the_ui_draws_from_needs_no_torch():
    """The viewer must open before (and without) PyTorch: ``ui/`` and everything it
    imports at module level or lazily, torch-free."""
    graph = _graph()
    for m in graph:
        if m.startswith(("tui_trainer.curves", "tui_trainer.logs", "tui_trainer.ui")):
            assert "torch" not in graph[m][1], f"{m} imports torch"


def test_a_run_is_made_in_one_module():
    makers = set()
    for m, p in modules().items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Run":
                makers.add(m)
            if isinstance(node, ast.Attribute) and node.attr == "run_handle":
                raise AssertionError(f"{m} uses run_handle: hold the Run instead")
    assert len(makers) <= 1, f"Run(...) is called in {sorted(makers)}"


def test_every_old_import_path_gives_the_same_module():
    import importlib

    import tui_trainer

    assert tui_trainer.MOVED
    for old, new in tui_trainer.MOVED.items():
        assert importlib.import_module(f"tui_trainer.{old}") is importlib.import_module(f"tui_trainer.{new}"), old
    from tui_trainer.control import request
    from tui_trainer.curves import Curve
    from tui_trainer.run import Run

    assert (Run.__module__, request.__module__, Curve.__module__) == (
        "tui_trainer.run.run", "tui_trainer.control.channel", "tui_trainer.curves.curve")


def test_styles_live_in_one_stylesheet():
    """The convention ``ui/__init__.py`` explains: every style in ``dashboard.tcss``, none beside a widget."""
    for m, p in modules().items():
        if m.startswith("tui_trainer.ui"):
            for node in ast.walk(ast.parse(p.read_text())):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                    node, ast.AnnAssign) else []
                if any(getattr(t, "id", None) == "DEFAULT_CSS" for t in targets):
                    raise AssertionError(f"{m} sets DEFAULT_CSS: put its styles in ui/dashboard.tcss")
    assert (PKG / "ui" / "dashboard.tcss").is_file()
