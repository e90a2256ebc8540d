"""The docs say what the code does: every command in README.md and docs/ uses only flags the
real parsers accept, the README stays short and maps the docs, the site's nav lists every
page, and `mkdocs build --strict` passes (a broken link, anchor or nav entry fails it).

The parsers are the real ones: each CLI's `build_parser()` and the pytest plugin's
`pytest_addoption`, so a flag renamed in the code and not in the docs fails here."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
README_MAX_LINES = 200

SCRIPTS = ("run_comparison.py", "run_synth_mipro_banking77.py", "run_dspy_mipro_banking77.py")
# A command as the docs write it: an optional `python`/`python3`, then a CLI, `dev.py bench`
# (which runs run_comparison.py with the rest) or pytest; the rest of the command follows.
COMMAND = re.compile(
    r"(?:^|(?<=[\s(]))(?:python3?\s+)?"
    r"(?P<prog>run_comparison\.py|run_synth_mipro_banking77\.py|run_dspy_mipro_banking77\.py"
    r"|dev\.py\s+bench|pytest)(?=\s|$)(?P<rest>.*)$")
LONG_FLAG = re.compile(r"(?<![\w-])--[A-Za-z][A-Za-z0-9-]*")
MIPRO_FLAG = re.compile(r"(?<![\w-])--mipro-[a-z0-9][a-z0-9-]*")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```|~~~)(?P<info>[^\n]*)\n(?P<body>.*?)^[ \t]*"
                   r"(?P=fence)[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(?<!`)`(?!`)(?P<code>[^`]+?)`(?!`)", re.S)


# --- the real parsers ------------------------------------------------------------------------


def _load_script(name: str) -> Any:
    return importlib.import_module(name.removesuffix(".py"))  # the repository root is on the path


def _argparse_flags(parser: argparse.ArgumentParser) -> frozenset[str]:
    return frozenset(parser._option_string_actions)  # every spelling, short and long


class _OptionRecorder:
    """Stands in for pytest's parser and its groups: keeps every option name declared."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def addoption(self, *names: str, **_kwargs: Any) -> None:
        self.names.update(names)

    def getgroup(self, *_args: Any, **_kwargs: Any) -> _OptionRecorder:
        return self

    def addini(self, *_args: Any, **_kwargs: Any) -> None:
        return None


@cache
def plugin_flags() -> frozenset[str]:
    """Every `--mipro-*` option the pytest plugin declares (its own pytest_addoption)."""
    from mipro_bench import plugin

    recorder = _OptionRecorder()
    plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    return frozenset(recorder.names)


@cache
def cli_flags(prog: str) -> frozenset[str]:
    return _argparse_flags(_load_script(prog).build_parser())


def accepted(prog: str) -> frozenset[str]:
    if prog == "pytest":
        return plugin_flags()
    return cli_flags("run_comparison.py" if prog.startswith("dev.py") else prog)


# --- finding commands in Markdown ------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    prog: str  # a script name, "dev.py bench" or "pytest"
    text: str
    flags: tuple[str, ...]  # flags the command (and a comment on its line) claims exist


def _snippets(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, code, is shell-like) for each line of a fenced block (continuations
    joined) and each inline code span, whose line breaks become spaces."""
    prose = text
    for block in FENCE.finditer(text):
        start = text.count("\n", 0, block.start("body")) + 1
        info = block.group("info").strip().lower()
        shell = info in ("", "bash", "sh", "shell", "console", "text")
        pending, first = "", start
        for offset, line in enumerate(block.group("body").splitlines()):
            if not pending:
                first = start + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield first, pending + line, shell
            pending = ""
        # blank the block out (keeping line numbers) so its backticks are not inline code
        prose = prose.replace(block.group(0), "\n" * block.group(0).count("\n"), 1)
    for span in INLINE_CODE.finditer(prose):
        line = prose.count("\n", 0, span.start()) + 1
        yield line, " ".join(span.group("code").split()), True


def _flags_in(prog: str, rest: str) -> tuple[str, ...]:
    code, _, comment = rest.partition(" #")
    code = re.split(r"\s(?:&&|\|\||;|\|)\s", code)[0]
    try:
        tokens = shlex.split(code)
    except ValueError:
        tokens = code.split()
    flags: list[str] = []
    for token in tokens:
        if token == "--":  # the rest goes to pytest unchanged
            break
        if re.match(r"^--?[A-Za-z]", token):
            flags.append(token.split("=", 1)[0])
    # "# also --model, --mode offline|online, --local": a comment's long flags are claims too
    flags += LONG_FLAG.findall(comment)
    if prog == "pytest":  # pytest's own flags (-k, -n, --benchmark-enable) are not ours
        flags = [f for f in flags if f.startswith("--mipro-")]
    return tuple(flags)


def commands_in(text: str, name: str) -> list[Command]:
    out = []
    for line, code, shell in _snippets(text):
        if not shell:
            continue
        match = COMMAND.search(code)
        if match is None:
            continue
        prog = " ".join(match.group("prog").split())
        out.append(Command(f"{name}:{line}", prog, code.strip(),
                           _flags_in(prog, match.group("rest"))))
    return out


def unknown_flags(commands: list[Command]) -> list[str]:
    return [f"{c.where}: {c.prog} has no {flag} (in `{c.text}`)"
            for c in commands for flag in c.flags if flag not in accepted(c.prog)]


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@cache
def all_commands() -> tuple[Command, ...]:
    return tuple(c for path in doc_files()
                 for c in commands_in(path.read_text(encoding="utf-8"), _rel(path)))


# --- the docs' commands are the real ones ----------------------------------------------------


def test_every_documented_command_uses_real_flags() -> None:
    commands = all_commands()
    # The finder really finds them: every CLI, dev.py bench and pytest, in numbers.
    assert {c.prog for c in commands} >= {*SCRIPTS, "dev.py bench", "pytest"}
    assert len(commands) >= 50 and sum(len(c.flags) for c in commands) >= 80
    problems = unknown_flags(list(commands))
    assert not problems, "documented flags the parsers do not accept:\n" + "\n".join(problems)


def test_every_mipro_option_named_anywhere_in_the_docs_exists() -> None:
    """Also in prose and tables (`--mipro-progress lines`), not only in commands."""
    problems = [f"{_rel(path)}: {flag}" for path in doc_files()
                for flag in sorted(set(MIPRO_FLAG.findall(path.read_text(encoding="utf-8"))))
                if flag not in plugin_flags()]
    assert not problems, "no such pytest option:\n" + "\n".join(problems)


@pytest.mark.parametrize(("snippet", "bad"), [
    ("```bash\npython run_comparison.py --all --no-such-flag 3\n```", "--no-such-flag"),
    ("run it: `python run_dspy_mipro_banking77.py --trials 5 --rollouts 3`", "--rollouts"),
    ("```bash\npython run_synth_mipro_banking77.py --rollouts 3  # also --trials\n```",
     "--trials"),
    ("```bash\npytest benchmarks/ -k synth \\\n    --mipro-sedes 1,2\n```", "--mipro-sedes"),
    ("`python dev.py bench --dspy-onl`", "--dspy-onl"),
    ("`python\nrun_comparison.py --all --compare-fial exact`", "--compare-fial"),
])
def test_a_fake_flag_is_noticed(snippet: str, bad: str) -> None:
    commands = commands_in(snippet, "snippet.md")
    assert len(commands) == 1
    problems = unknown_flags(commands)
    assert len(problems) == 1 and f"has no {bad} " in problems[0], problems


def test_what_is_not_a_flag_claim_is_left_alone() -> None:
    text = ("```bash\npython run_comparison.py --all -n 2 -- -k synth --whatever\n"
            "pytest benchmarks/ -n 2 -k fewshot --benchmark-enable -s\n```\n"
            "```toml\n# run_comparison.py --not-checked-in-toml\n```\n")
    commands = commands_in(text, "snippet.md")
    assert [c.flags for c in commands] == [("--all", "-n"), ()]
    assert not unknown_flags(commands)


# --- README and the site's structure ---------------------------------------------------------


def test_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def test_readme_keeps_the_two_quick_start_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "python dev.py bench" in text and "python dev.py test" in text


def _nav_pages(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_pages(value)


def _mkdocs_config() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml names Python objects (`!!python/name:...`) that only mkdocs resolves.
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)
    return yaml.load(MKDOCS_YML.read_text(encoding="utf-8"), Loader=Loader)


def test_the_nav_lists_every_page_and_only_pages_that_exist() -> None:
    nav = [p for p in _nav_pages(_mkdocs_config()["nav"]) if not p.startswith("http")]
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, f"nav {sorted(nav)} != docs/ {pages}"
    assert len(nav) == len(set(nav)), "a page is listed twice"


def test_the_readme_maps_every_page_and_its_links_resolve() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = {link for link in links if not re.match(r"^[a-z]+:", link)}
    missing = sorted(link for link in local if not (ROOT / link).is_file())
    assert not missing, f"README links to missing files: {missing}"
    unmapped = sorted(_rel(p) for p in DOCS.rglob("*.md") if _rel(p) not in local)
    assert not unmapped, f"README's map of the docs leaves out: {unmapped}"


def _mkdocs() -> str | None:
    beside = Path(sys.executable).parent / "mkdocs"
    return str(beside) if beside.is_file() else shutil.which("mkdocs")


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """What CI runs (under a second): a broken link or anchor, or a page outside the nav,
    is a warning, and --strict makes any warning fail the build."""
    mkdocs = _mkdocs()
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (it comes with the dev extra: "
                    "pip install -e '.[dev]')")
    done = subprocess.run(
        [mkdocs, "build", "--strict", "-f", str(MKDOCS_YML), "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert not (ROOT / "site").exists(), "the build wrote site/ into the repository"
