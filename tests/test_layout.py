"""The checkout stays one a newcomer can find their way in.

Checked from the checkout's root (`git ls-files`, so only what is committed counts):

- README.md is a user guide of at most 400 lines (reference material lives in docs/);
- no directory of study/, trainers/ or storage/ holds more than 16 Python modules side
  by side (a bigger one wants a subpackage per concern);
- no tracked file names a path outside the repository: the `shared` folder beside the
  checkout, or an absolute path of a development machine (under /work, /root or
  /home/<user>). Deployment paths such as a cluster's `/shared/data` mount are fine;
- no import cycle between the modules of study/, trainers/ and storage/, function-level
  (lazy) imports included and `if TYPE_CHECKING:` imports excluded.

Each check is a function of the repository it is given, so the tests below also show
that it fails on a violation.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 400
MODULES_PER_DIRECTORY = 16
PACKAGES = ("study", "trainers", "storage")

# The `shared` folder beside the checkout (named from the checkout or from inside it), and
# absolute paths of a development machine. `/home/<user>` needs a name after it; `~` and
# `$HOME` are fine (they are the user's), and so is `/home/ray`, the home of the user of
# Ray's container images (a deployment path, like a cluster's `/shared/data` mount).
OUTSIDE_PATH = re.compile(
    r"\.\./shared"
    r"|(?<![\w./-])shared[/]"
    r"|(?<![\w.~$-])/(?:work|root)/"
    r"|(?<![\w.~$-])/home/(?!ray\b)[\w.-]+"
)


def tracked_files(root: Path) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True
    ).stdout
    return [root / name for name in out.decode().split("\0") if name]


def is_binary(data: bytes) -> bool:
    return b"\0" in data[:8192]


# ---- the checks --------------------------------------------------------------------


def readme_too_long(root: Path) -> int | None:
    """The README's line count when it is over the limit, else None."""
    lines = len((root / "README.md").read_text().splitlines())
    return lines if lines > README_MAX_LINES else None


def crowded_directories(files: Iterable[Path], root: Path) -> dict[str, int]:
    """Directories of the packages with more than MODULES_PER_DIRECTORY `.py` files."""
    counts: dict[str, int] = defaultdict(int)
    for path in files:
        rel = path.relative_to(root)
        if rel.suffix == ".py" and rel.parts[0] in PACKAGES:
            counts[rel.parent.as_posix()] += 1
    return {d: n for d, n in counts.items() if n > MODULES_PER_DIRECTORY}


def outside_paths(files: Iterable[Path], root: Path) -> list[str]:
    """`file:line: text` for every line of a tracked text file naming a path outside
    the repository."""
    hits = []
    for path in files:
        if not path.is_file():  # deleted in the working tree, still in the index
            continue
        data = path.read_bytes()
        if is_binary(data):
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if OUTSIDE_PATH.search(line):
                hits.append(f"{path.relative_to(root).as_posix()}:{number}: {line.strip()}")
    return hits


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`, at any depth (functions, classes, try
    blocks), except those in the body of `if TYPE_CHECKING:` (its `else:` counts)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                if isinstance(stmt, ast.Import | ast.ImportFrom):
                    yield stmt
                else:
                    yield from _imports(stmt)
        else:
            yield from _imports(child)


def import_graph(files: Iterable[Path], root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports.

    `import a.b.c` and `from a.b.c import name` import `a.b.c`; `from a.b import c`
    imports the module `a.b.c` when there is one, else `a.b`. Relative imports are
    resolved. A package's `__init__` is the module named by the package.
    """
    paths = {
        module_name(p, root): p
        for p in files
        if p.suffix == ".py" and p.relative_to(root).parts[0] in PACKAGES and p.is_file()
    }
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in paths else base)
            for target in targets:
                if target in paths and target != name:
                    graph[name].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm,
    iterative), each sorted; a module importing itself is ignored."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


# ---- the checkout --------------------------------------------------------------------


@pytest.fixture(scope="module")
def files() -> list[Path]:
    return tracked_files(ROOT)


def test_readme_is_a_user_guide_of_at_most_400_lines() -> None:
    assert readme_too_long(ROOT) is None, (
        f"README.md has {readme_too_long(ROOT)} lines (at most {README_MAX_LINES}): "
        "move reference material to a page of docs/"
    )


def test_no_directory_of_the_packages_holds_more_than_16_modules(files: list[Path]) -> None:
    assert crowded_directories(files, ROOT) == {}


def test_no_tracked_file_names_a_path_outside_the_repository(files: list[Path]) -> None:
    assert outside_paths(files, ROOT) == []


def test_no_import_cycle_between_modules(files: list[Path]) -> None:
    graph = import_graph(files, ROOT)
    assert {"study.cli", "trainers.insgd", "storage.writer"} <= set(graph)
    assert import_cycles(graph) == []


# ---- each check fails on a violation ---------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> list[Path]:
    paths = []
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths


def test_the_readme_check_counts_lines(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("line\n" * README_MAX_LINES)
    assert readme_too_long(tmp_path) is None
    (tmp_path / "README.md").write_text("line\n" * (README_MAX_LINES + 1))
    assert readme_too_long(tmp_path) == README_MAX_LINES + 1


def test_the_directory_check_finds_a_crowded_directory(tmp_path: Path) -> None:
    names = {f"study/run/m{i}.py": "" for i in range(MODULES_PER_DIRECTORY + 1)}
    names |= {f"tests/t{i}.py": "" for i in range(MODULES_PER_DIRECTORY + 1)}  # not a package
    names |= {f"trainers/m{i}.py": "" for i in range(MODULES_PER_DIRECTORY)}
    assert crowded_directories(_write(tmp_path, names), tmp_path) == {
        "study/run": MODULES_PER_DIRECTORY + 1
    }


def test_the_path_check_finds_paths_outside_the_repository(tmp_path: Path) -> None:
    # built from pieces, so that this file does not hold what it tests for
    bad = {
        "a.py": "# see ..{0}shared{0}INSGD.md\n",
        "b.md": "cd {0}work{0}main && make\n",
        "c.sh": "cat {0}root{0}.bashrc\n",
        "d.txt": "x\nlogs in {0}home{0}alice/runs\n",
        "e.py": "# the paper's numbers (shared{0}INSGD.md)\n",
    }
    good = {
        "h.yaml": "data: /shared/data  # a cluster's mount; WORKDIR /home/ray\n",
        "f.md": "~/.pgpass, $HOME/.ray, /tmp{0}work{0} and ./work{0}x\n",
        "g.bin": "\0{0}work{0}inside a binary file\n",
    }
    pieces = {name: text.format("/") for name, text in (bad | good).items()}
    hits = outside_paths(_write(tmp_path, pieces), tmp_path)
    assert [h.split(":")[0] for h in hits] == ["a.py", "b.md", "c.sh", "d.txt", "e.py"], hits
    assert hits[3].startswith("d.txt:2:")


def test_the_cycle_check_finds_lazy_and_submodule_imports(tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        {
            "study/__init__.py": "",
            "study/a.py": "def f():\n    from study import b  # lazy, a submodule\n",
            "study/b.py": "from .c import thing\n",
            "study/c.py": "import study.a\n",
            "study/d.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from study import e\n"
            ),
            "study/e.py": "from study import d\n",
            "storage/__init__.py": "from storage import x\n",
            "storage/x.py": "from . import y\n",
            "storage/y.py": "",
        },
    )
    graph = import_graph(files, tmp_path)
    assert graph["study.a"] == {"study.b"} and graph["study.b"] == {"study.c"}
    assert graph["study.d"] == set() and graph["study.e"] == {"study.d"}
    assert graph["storage.x"] == {"storage.y"}
    assert import_cycles(graph) == [["study.a", "study.b", "study.c"]]
