"""Every command line the deployment recipes and docs show goes through the real parsers.

The sources: the README, every page of docs/, and every recipe and page of deploy/.
`insgd-study ...` lines are parsed by `study.cli.build_parser()` (and `launch` lines of
the deployment recipes are validated as a whole study configuration, which reads no file
and starts nothing); `ray ...` lines by Ray's own click CLI; `benchmarks/NAME.py ...`
lines by that script's own argument parser (stopped right after parsing); the
`.venv/bin/python -c` snippets run (on a small synthetic data set); `pytest` lines name
test files that exist, `make` lines targets of the Makefile, and every repository path a
command names exists. A renamed or misspelled flag in a recipe or in the docs fails here
instead of on a user's machine. Values may be placeholders ($HOME, HOST, URL). The links
between the pages, and their `#anchors`, must resolve too.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    [
        p
        for p in (ROOT / "deploy").rglob("*")
        if p.is_file()
        and "secrets" not in p.parts
        and p.suffix in (".md", ".yaml", ".yml", ".sh", ".json", "")
    ]
    + [ROOT / "README.md"]
    + list((ROOT / "docs").glob("*.md"))
)
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").rglob("*.md")]
)
OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "2>&1", "<", ")", "do", "done"}
RAY_COMMANDS = (
    "job",
    "start",
    "exec",
    "rsync-up",
    "rsync-down",
    "up",
    "down",
    "dashboard",
    "get-auth-token",
    "status",
    "attach",
    "submit",
)


@dataclass(frozen=True)
class Found:
    source: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.source}: {shlex.join(self.argv)}"


def logical_lines(text: str) -> Iterator[str]:
    """Lines with backslash continuations joined (shell blocks, Dockerfile, comments)."""
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        if pending and stripped.startswith("#"):
            stripped = stripped.lstrip("#").lstrip()  # a continued command inside comments
        if line.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield pending + (stripped if pending else line)
        pending = ""
    if pending:
        yield pending


def yaml_strings(text: str) -> Iterator[str]:
    """Every string in every YAML document; a list of strings also as one command line."""

    def walk(node: object) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            if node and all(isinstance(v, str) for v in node):
                yield shlex.join(node)
            for value in node:
                yield from walk(value)

    for document in yaml.safe_load_all(text):
        yield from walk(document)


def markdown_texts(text: str) -> Iterator[str]:
    """Fenced code blocks line by line, and inline code spans that carry a flag (a span
    without one, like `ray up` or `insgd-study report`, names a command in a sentence)."""
    fenced: list[str] = []
    prose: list[str] = []
    inside = False
    skip = False  # ```text blocks are pictures, not commands
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            skip = inside and line.strip() == "```text"
            continue
        if not skip:
            (fenced if inside else prose).append(line)
    yield from logical_lines("\n".join(fenced))
    for span in re.findall(r"`([^`]+)`", " ".join(prose)):
        if " --" in span:
            yield span


def candidate_texts(path: Path) -> Iterator[str]:
    text = path.read_text()
    if path.suffix == ".md":
        yield from markdown_texts(text)
        return
    if path.suffix in (".yaml", ".yml"):
        # commands live in strings (entrypoint, command) and in the header comments
        yield from yaml_strings(text)
        yield from logical_lines(uncommented(text, only_comments=True))
        return
    yield from logical_lines(uncommented(text, only_comments=False))


def uncommented(text: str, *, only_comments: bool) -> str:
    """Comment lines with their `#` removed (recipes document their commands there)."""
    lines = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            lines.append(line.lstrip().lstrip("#"))
        elif not only_comments:
            lines.append(line)
    return "\n".join(lines)


def split(text: str) -> list[str] | None:
    """Shell words, without a trailing `# comment`; None for text that is not shell."""
    for candidate in (text, text.lstrip("#$> -*")):
        try:
            return shlex.split(candidate, comments=True)
        except ValueError:
            continue
    return None


def commands_in(text: str, program: str) -> Iterator[tuple[str, ...]]:
    """`program ...` command lines in `text`, descending into quoted inner commands."""
    if program not in text:
        return
    tokens = split(text)
    if tokens is None:  # prose with an unbalanced quote: retry from the program's name on
        tokens = split(text[text.index(program) :]) or []
    for i, token in enumerate(tokens):
        if token == program:
            argv = []
            for arg in tokens[i + 1 :]:
                if arg in OPERATORS or arg.startswith(("2>", ">")):
                    break
                if arg == "...":  # "and the other flags"
                    continue
                argv.append(arg.rstrip(";"))
                if arg.endswith(";"):
                    break
            yield tuple(argv)
        elif program in token and split(token) not in (None, [token]):
            yield from commands_in(token, program)  # a quoted inner command line


def collect(program: str) -> list[Found]:
    found: dict[tuple[str, tuple[str, ...]], Found] = {}
    for path in SOURCES:
        for text in candidate_texts(path):
            for argv in commands_in(text, program):
                key = (str(path), argv)
                found.setdefault(key, Found(str(path.relative_to(ROOT)), argv))
    return list(found.values())


def insgd_commands() -> list[Found]:
    from study.commands import COMMANDS

    commands = []
    for found in collect("insgd-study"):
        if not found.argv or found.argv[0] not in COMMANDS:
            continue  # a mention (`insgd-study` alone, or in a sentence), not a command line
        if any(arg.startswith("[") for arg in found.argv):
            continue  # a usage synopsis: `query [--storage URL] [--study NAME] ...`
        if found.argv in (("report",), ("db",)):
            continue  # named in a sentence: neither runs without arguments
        commands.append(found)
    return commands


def ray_commands() -> list[Found]:
    return [f for f in collect("ray") if f.argv and f.argv[0] in RAY_COMMANDS]


def test_the_docs_show_every_command_and_the_extractor_finds_them() -> None:
    commands = insgd_commands()
    verbs = {f.argv[0] for f in commands}
    assert {"launch", "query", "report", "dashboard"} <= verbs, verbs
    deploy = [f for f in commands if f.source.startswith("deploy/")]
    assert len(deploy) >= 15, "\n".join(map(str, deploy))
    sources = {f.source for f in deploy}
    assert {
        "deploy/README.md",
        "deploy/kuberay/rayjob.yaml",
        "deploy/compose.yaml",
        "deploy/kuberay/dashboard.yaml",
    } <= sources, sources
    assert any(f.source == "README.md" for f in commands)
    rays = {f.argv[:2] if f.argv[0] == "job" else f.argv[:1] for f in ray_commands()}
    assert {("job", "submit"), ("start",), ("up",), ("exec",), ("rsync-up",)} <= rays, rays


@pytest.mark.parametrize("found", insgd_commands(), ids=str)
def test_insgd_study_command_parses_and_validates(found: Found) -> None:
    from study.cli import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(list(found.argv))
    except SystemExit as exc:
        if exc.code == 0 and "--help" in found.argv:
            return
        pytest.fail(f"{found}: rejected by the parser (exit {exc.code})")
    if found.argv[0] == "launch" and (found.source.split("/")[0] == "deploy"):
        # The deployment recipes' studies are complete examples (other docs may show
        # placeholders such as `--preset NAME`): validate the whole study configuration.
        from study.commands.launch import merged_config

        merged_config(args)  # raises UsageError when invalid


@pytest.mark.parametrize("found", ray_commands(), ids=str)
def test_ray_command_parses(found: Found) -> None:
    from ray.scripts.scripts import cli

    command: click.Command = cli
    args = list(found.argv)
    name = "ray"
    while True:
        try:
            ctx = command.make_context(name, args)
        except click.ClickException as exc:
            pytest.fail(f"{found}: {exc.format_message()}")
        if not isinstance(command, click.Group):
            break
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, args = command.resolve_command(ctx, rest)
        assert sub is not None, f"{found}: unknown ray command {name}"
        command = sub
    if found.argv[:2] == ("job", "submit"):
        entrypoint = ctx.params["entrypoint"]
        assert entrypoint and entrypoint[0] == "insgd-study", found
        assert "--storage" not in entrypoint, "a job's entrypoint is public: no database URL"


def test_every_page_of_the_docs_is_searched_for_commands() -> None:
    pages = {p.relative_to(ROOT).as_posix() for p in SOURCES if p.suffix == ".md"}
    expected = {"README.md", "deploy/README.md"}
    expected |= {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert expected <= pages, expected - pages
    by_page = {f.source for f in insgd_commands()}
    assert {
        "docs/studies.md",
        "docs/report.md",
        "docs/database.md",
        "docs/trainers.md",
        "docs/cluster-tests.md",
    } <= by_page, by_page
    assert "docs/cluster-tests.md" in {f.source for f in ray_commands()}
    assert {f.source for f in benchmark_commands()} >= {"docs/performance.md"}


# ---- commands other than insgd-study and ray ------------------------------------------


def fenced_blocks(path: Path) -> Iterator[str]:
    """The text of each fenced code block of a Markdown page (```text blocks excepted)."""
    block: list[str] | None = None
    skip = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            if block is None:
                block, skip = [], line.strip() == "```text"
            else:
                if not skip:
                    yield "\n".join(block)
                block = None
            continue
        if block is not None:
            block.append(line)


def shell_lines(program_pattern: str) -> list[Found]:
    """Command lines of the Markdown pages whose program matches `program_pattern`
    (a regular expression over the first word), as argv without the program."""
    found: dict[tuple[str, tuple[str, ...]], Found] = {}
    for page in PAGES:
        for block in fenced_blocks(page):
            for line in logical_lines(block):
                tokens = split(line) or []
                for i, token in enumerate(tokens):
                    if re.fullmatch(program_pattern, token):
                        argv = []
                        for arg in tokens[i + 1 :]:
                            if arg in OPERATORS or arg.startswith(("2>", ">")):
                                break
                            argv.append(arg)
                        key = (str(page), (token, *argv))
                        found.setdefault(key, Found(page.relative_to(ROOT).as_posix(), key[1]))
    return list(found.values())


def benchmark_commands() -> list[Found]:
    return shell_lines(r"(\S*/)?benchmarks/\w+\.py")


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("found", benchmark_commands(), ids=str)
def test_benchmark_command_parses(found: Found, monkeypatch: pytest.MonkeyPatch) -> None:
    script = ROOT / "benchmarks" / Path(found.argv[0]).name
    assert script.is_file(), f"{found}: no such benchmark"
    spec = importlib.util.spec_from_file_location(f"_doc_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse_args(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        module.main(list(found.argv[1:]))
    except _Parsed:
        return
    except SystemExit as exc:
        pytest.fail(f"{found}: rejected by the script's parser (exit {exc.code})")
    pytest.fail(f"{found}: the script's main() never parsed its arguments")


def python_snippets() -> list[tuple[str, str]]:
    snippets = []
    for page in PAGES:
        for block in fenced_blocks(page):
            # run here, from the checkout (those for a container or a cluster node are not)
            for code in re.findall(r'\.venv/bin/python -c "(.*?)"', block, flags=re.S):
                snippets.append((page.relative_to(ROOT).as_posix(), code))
    return snippets


# The snippets time the loader on the full synthetic set; here a small one will do.
SMALL_DATA = (
    "import functools, trainers.data as _data\n"
    "_data.load_dataset = functools.partial(_data.load_dataset, num_train=1024, num_val=64)\n"
)


def test_python_snippets_run() -> None:
    snippets = python_snippets()
    assert snippets, "the docs show a python -c snippet (docs/performance.md)"
    for source, code in snippets:
        done = subprocess.run(
            [sys.executable, "-c", SMALL_DATA + code],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{source}: {done.stderr[-2000:]}"
        assert done.stdout.strip(), source


def test_pytest_and_make_commands_name_what_exists() -> None:
    pytests = shell_lines(r"(\S*/)?python3?") + shell_lines(r"pytest")
    checked = 0
    for found in pytests:
        argv = list(found.argv[1:])
        if argv[:2] == ["-m", "pytest"]:
            argv = argv[2:]
        elif found.argv[0] != "pytest":
            continue
        for arg in argv:
            if arg.startswith("tests"):
                path = arg.split("::")[0]
                assert list(ROOT.glob(path)), f"{found}: {path} does not exist"
                checked += 1
    assert checked >= 3
    makefile = (ROOT / "Makefile").read_text()
    makes = shell_lines("make")
    assert {f.argv[1] for f in makes if len(f.argv) > 1} >= {"demo", "test"}
    for found in makes:
        for target in found.argv[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), found


REPO_PATH = re.compile(
    r"^(?:\./)?((?:deploy|benchmarks|tests|docs|study|trainers|storage|\.ci)/\S*)$"
)


def test_every_repository_path_a_command_names_exists() -> None:
    missing = []
    for page in PAGES:
        for block in fenced_blocks(page):
            for line in logical_lines(block):
                tokens = split(line) or []
                if tokens[:1] == ["kubectl"]:
                    continue  # `deploy/NAME` there is a Kubernetes deployment
                for token in tokens:
                    match = REPO_PATH.match(token.split("::")[0].rstrip(";"))
                    if match and not list(ROOT.glob(match.group(1).rstrip("/"))):
                        missing.append(f"{page.relative_to(ROOT)}: {token}")
    assert missing == []


# ---- links between the pages -------------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings."""
    seen: dict[str, int] = {}
    out = set()
    inside = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        if inside or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def test_every_link_between_the_pages_resolves() -> None:
    broken = []
    links = 0
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            links += 1
            path_part, _, anchor = target.partition("#")
            path = (page.parent / path_part).resolve() if path_part else page
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert links >= 20
    assert broken == []
