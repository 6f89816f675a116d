"""The code finds its modules as installed packages: nothing edits sys.path, and only tests import tests/.

The one allowed edit mimics the Functions worker (it puts the app root on sys.path before importing the app), in a
test's subprocess, on a line saying "mimics the Functions worker".
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_PATH_EDIT = re.compile(r"\bsys\.path\s*(\.\s*(insert|append|extend)\b|\[[^\]]*\]\s*=|\+=|=[^=])|\bsite\.addsitedir\b")
_WORKER_MIMIC = "mimics the Functions worker"


def _python_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return sorted(p for p in listed if (REPO / p).is_file())


def path_edits(path: str, text: str) -> list[str]:
    """`path:line: code` for every sys.path manipulation, except a test's mimicry of the Functions worker."""
    return [
        f"{path}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if _PATH_EDIT.search(line) and not (path.startswith("tests/") and _WORKER_MIMIC in line)
    ]


def test_imports(path: str, text: str, test_modules: set[str]) -> list[str]:
    """`path:line: import` for every import of tests/ (as `tests.x` or a bare test module name) outside tests/."""
    if path.startswith("tests/"):
        return []
    found = []
    for node in ast.walk(ast.parse(text, path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        found += [
            f"{path}:{node.lineno}: import {name}"
            for name in names
            if name.split(".")[0] == "tests" or name in test_modules
        ]
    return found


test_imports.__test__ = False  # a helper named for what it finds, not a test


def test_no_python_file_edits_sys_path() -> None:
    edits = [e for path in _python_files() for e in path_edits(path, (REPO / path).read_text(encoding="utf-8"))]
    assert not edits, "import installed packages instead of editing sys.path:\n" + "\n".join(edits)


def test_nothing_outside_tests_imports_tests() -> None:
    test_modules = {p.stem for p in (REPO / "tests").glob("*.py")} - {"conftest"}
    found = [
        i
        for path in _python_files()
        for i in test_imports(path, (REPO / path).read_text(encoding="utf-8"), test_modules)
    ]
    assert not found, "move what these need out of tests/ (e.g. synthetic_data/, local_stack/):\n" + "\n".join(found)


def test_the_checks_find_what_they_look_for() -> None:
    path = "sys." + "path"  # spelled apart, so that this file holds no edit itself
    edits = [
        f"{path}.insert(0, 'x')",
        f"{path}.append(p)",
        f"{path}[:0] = [p]",
        f"{path}.extend([p])",
        f"{path} += [p]",
        f"{path} = [p]",
        "site." + "addsitedir(p)",
    ]
    assert len(path_edits("bench/x.py", "\n".join(edits))) == len(edits)
    assert path_edits("tests/t.py", f"{path}.insert(0, cwd)  # {_WORKER_MIMIC}") == []
    assert path_edits("bench/x.py", f"{path}.insert(0, cwd)  # {_WORKER_MIMIC}") != []
    assert path_edits("bench/x.py", f"if p in {path}: print({path}[0])\nok = {path} == []") == []
    imports = "from tests.azurite import x\nimport tests\nfrom pdf_factory import y\nfrom local_stack import azurite"
    assert [i.split(": ")[1] for i in test_imports("bench/x.py", imports, {"pdf_factory", "azurite"})] == [
        "import tests.azurite",
        "import tests",
        "import pdf_factory",
    ]
    assert test_imports("tests/test_x.py", imports, {"pdf_factory"}) == []
