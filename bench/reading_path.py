"""How much code a learner reads behind a script: the project files it imports, transitively, and
their lines of code (no blank lines, comments or docstrings).

    python bench/reading_path.py pretrain.py grpo.py          # from the repository root
    python bench/reading_path.py --files pretrain.py          # and the files, largest first

Every import a file makes counts, including those inside functions: a reader who follows the code
meets them. The built-in demo corpus's generators (dataset/demo/*) are left out: they make data,
they are not the training path. Third-party modules are not followed.
"""
from __future__ import annotations

import argparse
import ast
import io
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = ("dataset", "demo")  # the demo corpus's generators


def code_lines(path: Path) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    source = path.read_text(encoding="utf-8")
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    layout = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in layout:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(lines)


def module_files(module: str) -> list[Path]:
    """The project files importing `module` runs: each package's __init__.py on the way, then the module."""
    parts = module.split(".")
    files = [ROOT.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
    files.append(ROOT.joinpath(*parts).with_suffix(".py"))
    return [f for f in files if f.is_file()]


def imported_modules(path: Path) -> list[str]:
    """Every module name `path` imports; for `from m import x`, both m and m.x (x may be a submodule)."""
    package = list(path.relative_to(ROOT).parent.parts)
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def reading_path(script: str) -> list[Path]:
    """The script and every project file it imports, transitively."""
    seen, todo = set(), [ROOT / script]
    while todo:
        path = todo.pop()
        if path in seen or path.relative_to(ROOT).parts[:2] == SKIPPED:
            continue
        seen.add(path)
        for module in imported_modules(path):
            todo += module_files(module)
    return sorted(seen)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scripts", nargs="+", help="entry scripts, relative to the repository root")
    p.add_argument("--files", action="store_true", help="also list each file with its lines, largest first")
    args = p.parse_args()
    for script in args.scripts:
        files = {path: code_lines(path) for path in reading_path(script)}
        print(f"{script}: {len(files)} files, {sum(files.values()):,} lines of code")
        if args.files:
            for path, lines in sorted(files.items(), key=lambda item: -item[1]):
                print(f"  {lines:5d}  {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
