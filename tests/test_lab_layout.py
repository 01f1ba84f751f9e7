"""The layout issue 17 asks for, checked on the source: the user's top level, ``fewshot`` without Streamlit, one lab
package without import cycles whose private names stay inside it, and small app modules."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "pages" / "lab"
TOP_LEVEL = {"app.py", "pages", "fewshot", "checkpoints", "requirements.txt", "requirements-dev.txt", "tests",
             "README.md", "pyproject.toml", "benchmarks", "docs", ".ci", ".streamlit", ".gitignore"}
MAX_APP_LINES = 400


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import in a file (function-level ones too), relative ones made absolute."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            out.append((base, [alias.name for alias in node.names]))
    return out


def test_the_top_level_is_the_users_layout():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    top = {line.split("/")[0] for line in tracked.splitlines() if line}
    assert top <= TOP_LEVEL, f"top-level entries beyond the user's layout: {sorted(top - TOP_LEVEL)}"
    assert not [p.name for p in REPO.glob("*.py") if p.name != "app.py" and p.name in tracked.split()]


def test_fewshot_never_imports_streamlit():
    found = [f"{path.relative_to(REPO)}: {module}" for path in (REPO / "fewshot").rglob("*.py")
             for module, _ in imports(path) if module.split(".")[0] == "streamlit"]
    assert found == []


def lab_graph() -> dict[str, set[str]]:
    graph = {}
    for path in LAB.glob("*.py"):
        name = f"pages.lab.{path.stem}" if path.stem != "__init__" else "pages.lab"
        deps = set()
        for module, names in imports(path):
            if module == "pages.lab":
                deps |= {f"pages.lab.{n}" for n in names if (LAB / f"{n}.py").exists()}
            elif module.startswith("pages.lab."):
                deps.add(module)
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path + [node, dep]
            if dep not in state and (found := visit(dep, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_lab_package_has_no_import_cycles():
    graph = lab_graph()
    assert {"pages.lab.task", "pages.lab.models", "pages.lab.widgets"} <= set(graph)
    assert "pages.lab.models" in graph["pages.lab.task"]  # (the graph sees the package's imports)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail


def test_the_lab_modules_depend_in_the_order_its_docstring_lists_them():
    """pages/lab/__init__.py lists every module; none imports one listed after it (so there can be no cycle)."""
    import re

    listed = re.findall(r"^    (\w+) ", (LAB / "__init__.py").read_text(), flags=re.M)
    modules = sorted(p.stem for p in LAB.glob("*.py") if p.stem != "__init__")
    assert sorted(listed) == modules, "pages/lab/__init__.py should list every module once"
    rank = {f"pages.lab.{name}": k for k, name in enumerate(listed)}
    later = [f"{node} imports {dep}" for node, deps in lab_graph().items() if node in rank
             for dep in deps if rank[dep] > rank[node]]
    assert later == []


def test_pages_use_only_public_names_of_the_lab():
    problems = []
    for path in [REPO / "app.py", *(REPO / "pages").glob("*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        lab_aliases = set()
        for module, names in imports(path):
            if module == "pages.lab" or module.startswith("pages.lab."):
                problems += [f"{path.name}: from {module} import {n}" for n in names if n.startswith("_")]
                if module == "pages.lab":
                    lab_aliases |= set(names)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "pages.lab":
                lab_aliases |= {a.asname for a in node.names if a.asname}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in lab_aliases and node.attr.startswith("_"):
                problems.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert problems == []


def test_app_modules_are_small():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
             for p in [REPO / "app.py", *(REPO / "pages").glob("*.py"), *LAB.glob("*.py")]}
    assert {p: n for p, n in sizes.items() if n > MAX_APP_LINES} == {}
