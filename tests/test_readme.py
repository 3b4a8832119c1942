"""README and docs/: short enough to read, every link leads somewhere, every command shown is one
the CLI takes (its options included)."""
import re
import shlex
from pathlib import Path

import pytest
import typer

try:  # typer vendors click from 0.16 on
    from typer._click import exceptions as click_errors
except ImportError:
    from click import exceptions as click_errors

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md"] + sorted((ROOT / "docs").glob("*.md"))


def test_readme_fits_on_a_few_screens_and_opens_with_the_two_set_up_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    long = [n for n, line in enumerate(lines, 1) if len(line) > 120]
    assert not long, f"README lines over 120 characters: {long}"
    blocks = re.findall(r"```bash\n(.*?)```", "\n".join(lines), re.S)
    assert blocks[0].strip() == ("python3 -m venv .venv && .venv/bin/pip install -e . && "
                                 ".venv/bin/nstbatch run manifests/example.csv")
    assert blocks[1].strip() == "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -q"


def _anchors(page: Path) -> set[str]:
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in page.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_leads_to_a_file_of_the_repository_or_a_heading(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def _commands(page: Path, inline: bool = True) -> list[tuple[str, bool]]:
    """The ``nstbatch`` commands of a page: those of its bash blocks (whole commands), and with
    ``inline`` those of its inline code (mentions, perhaps without their arguments)."""
    text = page.read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S)
    lines = [(re.sub(r"\s+#.*$", "", line).strip(), True) for block in blocks for line in block.splitlines()]
    if inline:
        prose = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
        lines += [(span, False) for span in re.findall(r"`(nstbatch [^`]+)`", prose)]
    found = []
    for line, whole in lines:
        for part in re.split(r"&&|;", line):
            words = part.strip().split()
            while words and words[0].startswith(".venv/bin/"):
                words[0] = words[0][len(".venv/bin/"):]
            if words and words[0] == "nstbatch":
                found.append((" ".join(words), whole))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_parses_with_the_cli(page):
    from nstbatch.cli import app

    group = typer.main.get_command(app)
    for command, whole in _commands(page):
        words = shlex.split(command)[1:]
        if not words or words[0].startswith("-") or any(w.isupper() or "[" in w or "<" in w for w in words):
            continue  # nstbatch --help, or a usage line (nstbatch run MANIFEST [OPTIONS])
        sub = group.get_command(group.context_class(group), words[0])
        assert sub is not None, f"{page.name}: no command {words[0]!r} in {command!r}"
        try:
            sub.make_context(words[0], words[1:])
        except click_errors.MissingParameter:
            assert not whole, f"{page.name}: {command!r} lacks an argument"
        except click_errors.UsageError as error:
            pytest.fail(f"{page.name}: {command!r}: {error.format_message()}")


def test_the_pages_show_commands_for_each_quick_start():
    commands = [command for command, _ in _commands(ROOT / "README.md", inline=False)]
    assert any(c.startswith("nstbatch stylize ") for c in commands)
    assert any(c.startswith("nstbatch run manifests/example.csv") for c in commands)
    assert any(c.startswith("nstbatch run data/stylize.yaml") for c in commands)
