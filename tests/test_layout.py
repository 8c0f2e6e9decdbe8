"""The tree shows the architecture: packages import each other without cycles, entry
scripts never import each other, and model/ is the network only.

Imports are read from the source (ast), not by importing, so a cycle is caught even
where Python would happen to resolve it. Imports under `if TYPE_CHECKING:` do not
count (they never run); imports inside functions do (they run when called).
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "model", "inference", "exporters", "tokenizer", "dataset", "trainer", "evaluation", "serving")
SCRIPTS = sorted(p.stem for p in REPO.glob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {p.stem: p for p in REPO.glob("*.py")}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path, name: str) -> set[str]:
    """Absolute names of everything this module imports at run time."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # a submodule or a name in base
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it makes Python load, parent packages included
    (importing a.b runs a/__init__.py first), except its own ancestors (already loaded)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own_ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges = set()
        for target in runtime_imports(path, name):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix != name and prefix not in own_ancestors:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (iterative DFS, white/grey/black)."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_between_project_modules():
    graph = import_graph()
    assert len(graph) > 70  # the walk really saw the project
    assert find_cycle(graph) is None


def test_no_entry_script_imports_another():
    graph = import_graph()
    offenders = {script: sorted(graph[script] & set(SCRIPTS)) for script in SCRIPTS if graph[script] & set(SCRIPTS)}
    assert offenders == {}


def loaded_by(graph: dict[str, set[str]], name: str) -> set[str]:
    """Every project module that importing `name` loads, directly or not."""
    seen, todo = set(), [name]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_serving_inference_and_exporters_never_load_the_trainer():
    # The server, generation and the exporters run where no training happens: importing them
    # must not load the training loop (or, through it, the data pipeline).
    graph = import_graph()
    for name in graph:
        if name.split(".")[0] in ("serving", "inference", "exporters", "serve", "export"):
            loaded = loaded_by(graph, name)
            assert not {m for m in loaded if m.split(".")[0] in ("trainer", "dataset")}, name


def test_the_shared_bottom_imports_nothing_above_it():
    graph = import_graph()
    for name in graph:
        if name.startswith("common"):
            assert {m.split(".")[0] for m in loaded_by(graph, name)} <= {"common"}, name


def test_the_import_rule_test_can_fail():
    graph = {"serving.app": {"inference.loading"}, "inference.loading": {"trainer.cli"}, "trainer.cli": set()}
    assert "trainer.cli" in loaded_by(graph, "serving.app")


def test_trainer_holds_the_loop_and_no_stage():
    # A stage's loss, rollouts and flags live in its script; trainer/ is the engine shared by all.
    stage_words = ("grpo", "preference", "dpo", "losses", "rewards", "distill")
    assert not [p.name for p in (REPO / "trainer").glob("*.py") if any(w in p.stem for w in stage_words)]


def test_model_package_is_the_network_only():
    model_files = {p.name for p in (REPO / "model").glob("*.py")}
    assert model_files == {"__init__.py", "__main__.py", "config.py", "model.py", "loss.py", "masks.py", "lora.py",
                           "checkpoint.py", "hf.py"}
    graph = import_graph()
    # What the network may load: itself, the tokenizer's identity, and the cache class of
    # generation (at call time only). `python -m model` (__main__) demonstrates it through inference/.
    outside = {target for name in graph if name.startswith("model") and name != "model.__main__"
               for target in graph[name] if not target.startswith("model")}
    assert outside <= {"inference", "inference.kv_cache"}


def test_dataset_root_holds_no_demo_generator():
    assert not list((REPO / "dataset").glob("demo*.py"))
    assert (REPO / "dataset" / "demo" / "__main__.py").is_file()


def test_every_package_says_what_lives_there():
    for package in PACKAGES:
        doc = ast.get_docstring(ast.parse((REPO / package / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 2, package
