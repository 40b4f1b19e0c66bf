"""The package's shape: no module imports one that imports it back, counting imports inside functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bench"


def _imports(path: Path) -> set[str]:
    """``bench`` modules a file imports anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bench":
            if node.module == "bench":
                found |= {f"bench.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("bench.")}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {f"bench.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, stack + [nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_bench():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_every_module_says_its_job_and_readme_lists_it():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    for path in PACKAGE.glob("*.py"):
        if path.stem == "__init__":
            continue
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no docstring"
        assert f"`{path.name}`" in layout, f"README's Layout section does not name {path.name}"


def test_cell_story_stays_short():
    # "About 150 lines": the story, its record, and the one helper it calls.
    assert len((PACKAGE / "cell.py").read_text().splitlines()) <= 165
