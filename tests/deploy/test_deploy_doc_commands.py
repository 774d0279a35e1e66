"""Every command line the deployment recipes and docs show goes through the real parsers.

`insgd-study ...` lines are parsed by `study.cli.build_parser()` (and `launch` lines are
validated as a whole study configuration, which reads no file and starts nothing);
`ray ...` lines by Ray's own click CLI. A renamed or misspelled flag in a recipe or in the
docs fails here instead of on a user's cluster. Values may be placeholders ($HOME, HOST).
"""

from __future__ import annotations

import re
import shlex
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
